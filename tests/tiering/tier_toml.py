"""The `[[tiers]]` of a landing + warm + cold configuration, as the tests write it (a str.format
template: endpoint, bucket, access_key, secret_key)."""

THREE_TIERS = """\
[[tiers]]
name = "landing"
backend = "local"
path = "landing"
codec = "raw"

[[tiers]]
name = "warm"
backend = "local"
path = "warm"
codec = "hot"

[[tiers]]
name = "cold"
backend = "s3"
endpoint = "{endpoint}"
bucket = "{bucket}"
access_key = "{access_key}"
secret_key = "{secret_key}"
"""
