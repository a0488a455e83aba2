"""De-identification on the way out of the archive: PS3.15 Annex E, the Basic Application Level
Confidentiality Profile and its retain options (docs/integration.md, "De-identification").

* ``table_e1_1``    every row of Table E.1-1: tag, keyword, basic action, option actions
* ``profile``       the retain options (CLI names, CID 7050 codes) and the action of a tag
* ``pseudonyms``    HMAC pseudonyms of a project: UIDs (2.25.x), patient ID and name, date shift
* ``safe_private``  the private attributes kept under Retain Safe Private
* ``burned_in``     which objects may carry identity in their pixels
* ``deidentifier``  applies the table to one object, recursively into sequences
* ``settings``      the ``[deidentify]`` table of the configuration (projects, secrets, mapping)
* ``mapping``       the original -> pseudonym mapping, kept encrypted (AES-GCM) or not at all
* ``export``        a research export: the objects of a study/series/instance, a report, the mapping

Callers: ``dicomvault export --deidentify`` (cli.py), a ``[[forward]]`` rule's ``deidentify``
(replication/forward.py) and ``POST /api/studies/{uid}/export-research`` (web/research_routes.py).
"""
