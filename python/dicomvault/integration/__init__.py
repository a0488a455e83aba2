"""Hospital integration: the archive as other systems of the hospital see it (FHIR for EHRs,
later HL7 v2 feeds, worklist, corrections). Network layer: reads and writes through the index
and the engine, never the reverse."""
