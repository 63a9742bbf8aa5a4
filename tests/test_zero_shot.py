"""Zero-shot heads on a tiny random-weight open_clip model (the shipped ``clip_tiny_demo`` config)."""

from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import open_clip
import pytest
import torch

from clip_robustness.models.adapters.open_clip_head import build_zero_shot_head, templates_for
from clip_robustness.models.adapters.text_head import ZeroShotClassifier, zero_shot_logits
from clip_robustness.models.build import build_model
from clip_robustness.models.zero_shot import HeadMismatchError, build_head_for_row, load_head, save_head

ROW = {
    "model_id": "openclip__clip_tiny_demo.random",
    "library": "open_clip",
    "architecture": "clip_tiny_demo",
    "pretrained": "",
    "weights_file": "",
}
LOGIT_SCALE = 50.0


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    model, preprocess, _ = build_model(ROW, "cpu")
    with torch.no_grad():
        model.logit_scale.fill_(math.log(LOGIT_SCALE))
    return model, open_clip.get_tokenizer(ROW["architecture"])


@pytest.fixture(scope="module")
def openai_head(tiny_clip):
    """The full 1000-class x 80-template head (about 5 s on CPU): built once for the module."""
    model, tokenizer = tiny_clip
    return build_zero_shot_head(model, tokenizer, ROW["model_id"], "openai")


def test_openai_head_is_embed_dim_by_1000_with_unit_norm_columns(tiny_clip, openai_head):
    model, _ = tiny_clip
    embed_dim = model.text_projection.shape[1]
    assert openai_head.weights.shape == (embed_dim, 1000)
    assert openai_head.weights.dtype == torch.float32
    torch.testing.assert_close(openai_head.weights.norm(dim=0), torch.ones(1000))


def test_openai_head_uses_the_80_openai_templates_and_records_the_prompt_set(openai_head):
    assert len(open_clip.OPENAI_IMAGENET_TEMPLATES) == 80
    assert openai_head.n_templates == 80 and openai_head.prompt_set == "openai"
    assert openai_head.model_id == ROW["model_id"]


def test_head_column_is_the_normalised_mean_of_normalised_prompt_embeddings(tiny_clip, openai_head):
    model, tokenizer = tiny_clip
    for class_index in (0, 417, 999):  # "tench", "balloon", "toilet paper"
        name = open_clip.IMAGENET_CLASSNAMES[class_index]
        prompts = [template(name) for template in open_clip.OPENAI_IMAGENET_TEMPLATES]
        with torch.no_grad():
            embeddings = torch.nn.functional.normalize(model.encode_text(tokenizer(prompts)), dim=-1)
        expected = torch.nn.functional.normalize(embeddings.mean(dim=0), dim=0)
        torch.testing.assert_close(openai_head.weights[:, class_index], expected, atol=1e-5, rtol=1e-5)


def test_head_records_the_models_logit_scale_multiplier(openai_head):
    # the fixture set the learnt log-scale to log(50): the multiplier is exp(log 50) = 50
    assert openai_head.logit_scale == pytest.approx(LOGIT_SCALE)


def test_zero_shot_logits_are_logit_scale_times_cosine_similarity(tiny_clip, openai_head):
    model, _ = tiny_clip
    images = torch.randn(3, 3, 32, 32)
    classifier = ZeroShotClassifier(model, openai_head)
    with torch.no_grad():
        logits = classifier(images)
        features = model.encode_image(images)
    cosine = torch.nn.functional.cosine_similarity(features[:, :, None], openai_head.weights[None], dim=1)
    assert logits.shape == (3, 1000) and logits.dtype == torch.float32
    torch.testing.assert_close(logits, LOGIT_SCALE * cosine, atol=1e-4, rtol=1e-5)
    assert logits.abs().max() <= LOGIT_SCALE + 1e-4  # |cosine| <= 1
    torch.testing.assert_close(zero_shot_logits(features, openai_head.weights, 1.0), cosine, atol=1e-5, rtol=1e-5)


def test_saved_head_loads_back_identical(tmp_path, openai_head):
    path = save_head(openai_head, tmp_path / "heads" / "m.pt")
    loaded = load_head(path, model_id=ROW["model_id"], prompt_set="openai")
    torch.testing.assert_close(loaded.weights, openai_head.weights, atol=0, rtol=0)
    assert (loaded.logit_scale, loaded.prompt_set, loaded.n_templates, loaded.model_id) == (
        openai_head.logit_scale,
        "openai",
        80,
        ROW["model_id"],
    )
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temp file left behind


@pytest.mark.parametrize("key, value", [("model_id", "openclip__other"), ("prompt_set", "simple")])
def test_loading_a_head_for_another_model_or_prompt_set_is_refused(tmp_path, openai_head, key, value):
    path = save_head(openai_head, tmp_path / "m.pt")
    with pytest.raises(HeadMismatchError, match=f"{key} .*expected '{value}'"):
        load_head(path, **{key: value})


def test_simple_prompt_set_uses_open_clips_simple_templates():
    torch.manual_seed(0)
    head = build_head_for_row(ROW, "simple", "cpu", progress=False)
    assert head.prompt_set == "simple"
    assert head.n_templates == len(open_clip.SIMPLE_IMAGENET_TEMPLATES)
    assert head.weights.shape[1] == 1000
    # a freshly built model keeps open_clip's initial log-scale log(1/0.07): multiplier 1/0.07
    assert head.logit_scale == pytest.approx(1 / 0.07, rel=1e-6)


def test_unknown_prompt_set_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown prompt set 'fancy'.*'openai', 'simple'"):
        templates_for("fancy")


def test_classifier_rows_have_no_zero_shot_head():
    with pytest.raises(ValueError, match="timm classifier: it has no zero-shot head"):
        build_head_for_row({"model_id": "timm__x", "library": "timm"}, "openai", "cpu")
