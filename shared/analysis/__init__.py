"""Analysis pieces two functions share: chart specs and rendering, the Evidently result reader
and tenants' KPI definitions (analyze runs them, artifacts serves their API)."""
