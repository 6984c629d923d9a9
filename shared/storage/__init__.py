"""Where tenants' data lives: the object store (local or S3), the DuckLake warehouse, the writer's
lease, job documents and each job's artifact index."""
