"""The operators' command line: `settlement --help`."""
