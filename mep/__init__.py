"""The root-run manager: start commands in, privilege-dropped user endpoints out."""
