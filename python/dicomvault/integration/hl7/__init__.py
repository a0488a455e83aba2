"""HL7 v2 over MLLP: orders into the worklist, reports onto studies (docs/integration.md)."""
