"""Rule write_report_card: the report card of one own model -> results/report_cards/{model}.html."""

from pathlib import Path

import pandas as pd

from clip_robustness.figures.data import read_metrics
from clip_robustness.figures.report_card import render_html, report_card
from clip_robustness.logits.cache import read_metadata
from clip_robustness.models.registry import load_model_registry
from clip_robustness.models.weights import read_weights_record
from clip_robustness.workflow.joblog import job_log

with job_log(snakemake.log[0]) as log:
    model = snakemake.wildcards.model
    logits_metadata = {meta["dataset"]: meta for meta in map(read_metadata, snakemake.input.logits)}
    card = report_card(
        model,
        read_metrics(snakemake.input.metrics),
        load_model_registry(snakemake.input.registry).table,
        pd.read_csv(snakemake.input.qc),
        logits_metadata,
        read_weights_record(snakemake.input.weights_record),
    )
    Path(snakemake.output[0]).write_text(render_html(card, snakemake.params.dataset_titles))
    log.info("report card of %s: %d metric rows compared with the paper's groups", model, len(card.comparison))
