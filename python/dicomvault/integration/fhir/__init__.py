"""FHIR R4 read API for EHRs: ImagingStudy, Patient and Endpoint resources built from the index.

  ids.py         reversible FHIR ids of Study Instance UIDs and Patient IDs
  params.py      search parameter parsing (tokens, references, date prefixes, paging)
  mapping.py     index rows -> FHIR resources (the DICOM -> FHIR element mapping)
  search.py      searches and reads against the index: a constant number of queries per page
  bundle.py      searchset Bundles with their paging links
  capability.py  the CapabilityStatement (what params.py and search.py support, nothing more)

No HTTP here: web/fhir_routes.py serves these under /fhir/r4 through the one security check.
"""
