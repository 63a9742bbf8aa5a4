"""The prompt sets of the prompt-set ablation (config ``zero_shot.ablation_prompt_sets``; docs/methods.md,
"Embeddings cache and prompt-set ablation").

An entry is a built-in id or the path of a user's file:

- ``openai``: OpenAI's 80 ImageNet templates (open_clip's ``OPENAI_IMAGENET_TEMPLATES``);
- ``simple``: open_clip's ``SIMPLE_IMAGENET_TEMPLATES``;
- ``one_template``: the single template ``"a photo of a {}."``;
- a YAML file (``.yaml``/``.yml``) named by its path; the prompt set is named by the file's stem. Its format
  (:func:`read_prompt_file`): a mapping with ``templates`` (a list of strings, each holding ``{}`` exactly once, where
  the class name goes) and/or ``classnames`` (a list of exactly 1000 non-empty strings, in ImageNet-1k index order).
  A missing ``templates`` takes OpenAI's 80, missing ``classnames`` open_clip's ``IMAGENET_CLASSNAMES``. Any other
  key, or a bad value, is an error naming the file and the key.

Every class of every set is averaged over its templates by open_clip's ``build_zero_shot_classifier`` (the adapter's
``build_text_head``). This module reads and validates only; it imports neither torch nor open_clip.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from clip_robustness.names import NUM_CLASSES

#: Built-in prompt-set ids: open_clip's two template lists, and one template.
BUILTIN_PROMPT_SETS = ("openai", "simple", "one_template")
#: The template of ``one_template``.
ONE_TEMPLATE = "a photo of a {}."
#: Keys a user's prompt file may hold.
PROMPT_FILE_KEYS = ("templates", "classnames")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class PromptSetError(ValueError):
    """A prompt-set entry or a user's prompt file is not valid (the message names the file and key)."""


@dataclass(frozen=True)
class PromptSet:
    """One prompt set: ``name`` (the ablation's label), ``templates`` (format strings with one ``{}``; ``None``:
    open_clip's list named by ``builtin``), ``classnames`` (1000 names; ``None``: open_clip's ImageNet names),
    ``source`` (the config entry)."""

    name: str
    templates: tuple[str, ...] | None
    classnames: tuple[str, ...] | None
    source: str
    builtin: str | None = None


def is_prompt_file(spec: str | os.PathLike) -> bool:
    """Whether config entry ``spec`` names a user's file (a ``.yaml``/``.yml`` path) rather than a built-in id."""
    return str(spec).endswith((".yaml", ".yml"))


def prompt_set_name(spec: str | os.PathLike) -> str:
    """The name of config entry ``spec``: a built-in id itself, a file its stem. :class:`PromptSetError` otherwise."""
    text = str(spec)
    if not is_prompt_file(text):
        if text not in BUILTIN_PROMPT_SETS:
            raise PromptSetError(
                f"zero_shot.ablation_prompt_sets: {text!r} is neither a built-in prompt set "
                f"{list(BUILTIN_PROMPT_SETS)} nor a .yaml prompt file"
            )
        return text
    name = Path(text).stem
    if not _NAME.match(name) or name in BUILTIN_PROMPT_SETS:
        raise PromptSetError(
            f"{text}: a prompt file's stem names its prompt set; {name!r} must be letters, digits, "
            f"'.', '_' or '-' and not a built-in id {list(BUILTIN_PROMPT_SETS)}"
        )
    return name


def check_templates(templates: object, where: str) -> tuple[str, ...]:
    """``templates`` as a tuple, after checking it is a non-empty list of strings holding ``{}`` exactly once."""
    if not isinstance(templates, list) or not templates:
        raise PromptSetError(f"{where}: 'templates' must be a non-empty list of strings")
    for k, template in enumerate(templates):
        if not isinstance(template, str) or template.count("{}") != 1 or template.count("{") != 1:
            raise PromptSetError(
                f"{where}: templates[{k}] = {template!r} must be a string holding '{{}}' exactly "
                "once (where the class name goes) and no other brace"
            )
    return tuple(templates)


def check_classnames(classnames: object, where: str) -> tuple[str, ...]:
    """``classnames`` as a tuple, after checking it holds :data:`NUM_CLASSES` non-empty strings."""
    if not isinstance(classnames, list) or len(classnames) != NUM_CLASSES:
        n = len(classnames) if isinstance(classnames, list) else type(classnames).__name__
        raise PromptSetError(
            f"{where}: 'classnames' must list exactly {NUM_CLASSES} class names in ImageNet-1k index order, found {n}"
        )
    for k, name in enumerate(classnames):
        if not isinstance(name, str) or not name.strip():
            raise PromptSetError(f"{where}: classnames[{k}] = {name!r} must be a non-empty string")
    return tuple(classnames)


def read_prompt_file(path: str | os.PathLike) -> PromptSet:
    """Read and validate a user's prompt file (module docstring); :class:`PromptSetError` naming the file and key."""
    import yaml

    path = Path(path)
    name = prompt_set_name(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PromptSetError(f"{path}: prompt file of zero_shot.ablation_prompt_sets not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise PromptSetError(f"{path}: not a readable YAML prompt file ({exc})") from exc
    if not isinstance(data, dict) or not data:
        raise PromptSetError(f"{path}: a prompt file is a mapping with 'templates' and/or 'classnames'")
    unknown = sorted(set(map(str, data)) - set(PROMPT_FILE_KEYS))
    if unknown:
        raise PromptSetError(f"{path}: unknown key(s) {unknown}; a prompt file holds {list(PROMPT_FILE_KEYS)}")
    templates = check_templates(data["templates"], str(path)) if "templates" in data else None
    classnames = check_classnames(data["classnames"], str(path)) if "classnames" in data else None
    return PromptSet(name, templates, classnames, str(path), builtin=None if templates else "openai")


def resolve_prompt_set(spec: str | os.PathLike) -> PromptSet:
    """The :class:`PromptSet` of config entry ``spec`` (a built-in id or a prompt file)."""
    if is_prompt_file(spec):
        return read_prompt_file(spec)
    name = prompt_set_name(spec)
    if name == "one_template":
        return PromptSet(name, (ONE_TEMPLATE,), None, name)
    return PromptSet(name, None, None, name, builtin=name)
