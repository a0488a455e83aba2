"""The hospital side of the archive (RIS/HIS): the modality worklist and performed procedure steps.

Modules:

* ``worklist_entry``   one scheduled procedure step: fields, key, validation, its DICOM form
* ``worklist_match``   PS3.4 C.2.2.2 / K.6 matching of a worklist C-FIND identifier
* ``worklist_store``   the durable store of entries and MPPS instances (the index's meta family)
* ``mpps``             Modality Performed Procedure Step N-CREATE / N-SET rules (PS3.4 F.7)
* ``worklist_commands`` `dicomvault worklist add|list|show|remove`

The DIMSE side (C-FIND, N-CREATE, N-SET handlers) is dimse/worklist.py and dimse/mpps.py; the
HTTP side web/worklist_routes.py. An HL7 order feed calls ``WorklistStore`` directly.
"""
