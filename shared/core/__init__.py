"""The base every other part stands on: errors, tenant names, settings, CloudEvents and their
schemas, and the routes and bindings that carry events. Imports nothing else of UDB."""
