"""Core: settings (where things are), configuration loading, file io and the pipeline's time settings.
Imports nothing of the project's other rooms."""
