"""The eval stage's library: downstream tasks (`tasks`, `readers`, `metrics`), finetuning and scoring
(`finetune`, with one head module per kind of task: `classification`, `qa`, `choice`), and the comparison report
(`results`, `report`, `charts`). Importing this package imports nothing heavy; `finetune` needs torch and
transformers, `charts` matplotlib."""
