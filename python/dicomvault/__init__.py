"""dicomvault: an open-source PACS archive."""

__version__ = "0.1.0"
