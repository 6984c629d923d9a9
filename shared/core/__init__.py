"""The base every other part stands on: errors, tenant names, settings, CloudEvents and their
schemas, the routes and bindings that carry events, and the autoescaped page templating every
HTML page goes through. Imports nothing else of UDB."""
