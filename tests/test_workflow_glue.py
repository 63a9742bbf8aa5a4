"""What the workflow files call into: the one log and benchmark scheme (clip_robustness.workflow.joblog), the study
as the rules see it (clip_robustness.logits.workflow.StudyWorkflow, on the full study's config and registries), and
the check before the first job (clip_robustness.logits.startup.StartUp.before_jobs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from clip_robustness.logits.cutting import CORE_GROUP
from clip_robustness.logits.startup import StartUp
from clip_robustness.logits.workflow import StudyWorkflow, group_rule
from clip_robustness.names import weights_record_path
from clip_robustness.workflow.joblog import benchmark_path, log_path

REPO = Path(__file__).resolve().parents[1]


def test_every_rule_logs_and_benchmarks_under_its_own_name_then_its_wildcards():
    assert log_path("cache_logits", "model") == "results/logs/cache_logits/{model}.log"
    assert log_path("decode_images_imagenet_c", "preprocessing", "imagenet_c_group") == (
        "results/logs/decode_images_imagenet_c/{preprocessing}/{imagenet_c_group}.log"
    )
    assert log_path("aggregate_metrics") == "results/logs/aggregate_metrics.log"
    assert benchmark_path("cache_logits_imagenet_c", "model", "imagenet_c_group") == (
        "results/benchmarks/cache_logits_imagenet_c/{model}/{imagenet_c_group}.tsv"
    )
    assert (
        benchmark_path("build_zero_shot_head", "model").format(model="m")
        == "results/benchmarks/build_zero_shot_head/m.tsv"
    )


def test_group_jobs_are_the_core_rule_or_its_imagenet_c_twin():
    assert group_rule("cache_logits", CORE_GROUP) == ("cache_logits", ())
    assert group_rule("decode_images", "3") == ("decode_images_imagenet_c", ("imagenet_c_group",))


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> StudyWorkflow:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["dataset_registry"] = str(REPO / config["dataset_registry"])
    config["model_registry"] = str(REPO / config["model_registry"])
    return StudyWorkflow.from_config(config)


def test_the_full_study_splits_into_core_and_imagenet_c_groups(study):
    imagenet_c = [d for d in study.datasets if d.startswith("imagenet_c_")]
    assert study.core_datasets == [d for d in study.datasets if d not in imagenet_c]
    assert study.group_datasets() == study.core_datasets
    group = study.groups.imagenet_c_groups()[0]
    assert study.group_datasets(group) == study.groups.imagenet_c_ids(group)
    assert sorted(d for g in study.groups.imagenet_c_groups() for d in study.group_datasets(g)) == sorted(imagenet_c)


def test_metric_roles_name_every_dataset_once_in_study_order(study):
    roles = study.metric_roles()
    assert roles["datasets"] == study.datasets and roles["in_distribution"] == "imagenet_val"
    assert roles["test_conditions"] == list(study.study.test_conditions) and roles["ood"] == list(
        study.study.ood_datasets
    )
    assert study.metric_roles(with_datasets=False) == {k: v for k, v in roles.items() if k != "datasets"}


def test_a_logits_group_job_waits_for_its_weights_record(study):
    model = study.models[0]
    inputs = study.cache_group_inputs(model)
    assert inputs["weights_record"] == weights_record_path(model) == f"data/weights/{model}.json"
    assert inputs["manifests"] == [f"data/manifests/{d}.parquet" for d in study.core_datasets]


def test_report_cards_are_for_own_models_only(study):
    assert study.own_models == []  # the paper's study has none
    with pytest.raises(ValueError, match="report cards are made for models of your own"):
        study.own_model_registry(study.models[0])


def test_a_missing_weights_file_stops_the_run_before_any_job_unless_keep_going(study, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = study.models[0]
    row = {**study.plan.row(model), "weights_file": "weights/missing.safetensors"}
    monkeypatch.setitem(study.plan._rows, model, row)
    start_up = StartUp(study, scripts=REPO / "workflow/scripts", warn=print)
    message = start_up.before_jobs([("cache_logits", model)], keep_going=False)
    assert message is not None and model in message and "weights/missing.safetensors" in message
    assert start_up.before_jobs([("cache_logits", model)], keep_going=True) is None
    # a run that schedules no job loading that model's weights (metrics from a shared cache) is not stopped
    assert (
        start_up.before_jobs([("compute_model_metrics", model), ("aggregate_metrics", None)], keep_going=False) is None
    )


def test_the_ablations_input_functions_follow_its_prompt_sets(study, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from clip_robustness.logits.ablation_inputs import AblationInputs
    from clip_robustness.names import ABLATION_METRICS, ablation_model_metrics_path, embeddings_path

    ablation = AblationInputs(study)
    zero_shot = [m for m in study.models if study.model_registry.is_zero_shot(m)]
    assert zero_shot and study.all_embeddings() == [embeddings_path(m, d) for m in zero_shot for d in study.datasets]
    assert ablation.targets() == ablation.table() == ablation.model_tables() == []  # the paper's config: no ablation
    prompts = tmp_path / "mine.yaml"
    prompts.write_text('templates: ["a blurry photo of a {}."]\n')
    monkeypatch.setitem(study.config["zero_shot"], "ablation_prompt_sets", ["one_template", str(prompts)])
    assert ablation.targets() == [
        ABLATION_METRICS,
        "results/figures/prompt_sets.png",
        "results/figures/prompt_sets.pdf",
    ]
    assert ablation.table() == [ABLATION_METRICS]
    assert ablation.model_tables() == [
        ablation_model_metrics_path(m, s) for m in zero_shot for s in ("one_template", "mine")
    ]
    mine, builtin = SimpleNamespace(prompt_set="mine"), SimpleNamespace(prompt_set="one_template")
    assert ablation.prompt_spec(mine) == str(prompts) and ablation.prompt_file(mine) == [str(prompts)]
    assert ablation.prompt_spec(builtin) == "one_template" and ablation.prompt_file(builtin) == []
    with pytest.raises(ValueError, match="'simple' is not a prompt set"):
        ablation.prompt_spec(SimpleNamespace(prompt_set="simple"))
    model = SimpleNamespace(model=zero_shot[0])
    assert ablation.model_embeddings(model) == [embeddings_path(zero_shot[0], d) for d in study.datasets]
    options = ablation.figure_options()
    assert options["prompt_sets"] == ["one_template", "mine"] and options["id_dataset"] == study.study.in_distribution
    assert options["ood_sets"] == list(study.study.ood_datasets)
