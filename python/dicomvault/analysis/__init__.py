"""Analysis: the pipeline that analyses studies as they arrive (api.py the analyzers' contract;
settings.py, plugins.py, events.py, jobs.py, service.py, runner.py, worker.py, commands.py: see
docs/analysis.md), the analyzers, and the derived objects the archive writes itself (sr.py, the
viewer's measurements as DICOM SR TID 1500). Everything here builds pydicom Datasets; they are
stored through the engine like any received object."""
