"""The space files (YAML data beside this module) and the one module set that reads them, below search/ and results/.

space_file: a file read from disk (data, never code) and `--set`; space: the raw mapping validated into a typed
`Space`, written back as a mapping, diffed against a run's record, and its dimensions as Optuna distributions;
errors: how bad input is reported.
"""
