"""The genre classification consumer service."""


def installed_version() -> str:
    """This distribution's version for `--version` (both entry points), or why there is none."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("genre-stream")
    except PackageNotFoundError:
        return "unknown (not installed as a package)"
