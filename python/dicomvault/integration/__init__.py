"""Hospital integration: the archive as other systems of the hospital see it (FHIR for EHRs,
IOCM rejection notes: iocm.py; later HL7 v2 feeds, worklist). Network layer: reads and writes
through the index and the engine, never the reverse."""
