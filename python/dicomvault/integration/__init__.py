"""Hospital integration: the archive as other systems of the hospital see it (FHIR for EHRs, the
modality worklist and performed procedure steps for modalities and the RIS, IOCM rejection notes
(``iocm``, ``iocm_commands``), later HL7 v2 feeds). Network layer: reads and writes through the
index and the engine, never the reverse.

Worklist and MPPS modules:

* ``worklist_entry``   one scheduled procedure step: fields, key, validation, its DICOM form
* ``worklist_match``   PS3.4 C.2.2.2 / K.6 matching of a worklist C-FIND identifier
* ``worklist_store``   the durable store of entries and MPPS instances (the index's meta family)
* ``mpps``             Modality Performed Procedure Step N-CREATE / N-SET rules (PS3.4 F.7)
* ``worklist_commands`` `dicomvault worklist add|list|show|remove`

Their DIMSE side (C-FIND, N-CREATE, N-SET handlers) is dimse/worklist.py and dimse/mpps.py, the
HTTP side web/worklist_routes.py; an HL7 order feed calls ``WorklistStore`` directly. FHIR is the
``fhir`` package.
"""
