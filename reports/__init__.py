"""The presentation layer: self-contained HTML reports of a job's output folder (DESIGN §3).

Reports are not part of the data contract: they read what a job leaves behind (``dataset.json``,
``stats.json``, the ledger, the shards) and draw it for people. This package is the page kit
every job's report is built from; the job-specific sections live with their jobs
(``curation.report``, ``recaption.report``, ``video_prep.report``).

``html`` (escaping, number formats, tables, the page), ``sections`` (header, funnel, reasons,
histograms), ``contact_sheets`` (kept and dropped samples), ``ledger_summary`` (counts and the
funnel from the ledger's footers), ``histograms`` (score columns, from the footers),
``samples`` (kept samples read back from the shards, dropped thumbnails from the ledger),
``plots`` (PNG figures), ``thumbs`` (JPEG thumbnails). It imports ``manifests`` and no other
package of the project, so the jobs can build on it without pulling each other in.
"""
