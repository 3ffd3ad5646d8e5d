"""Fine-tuning recipes: flat YAML files in finetune/recipes/, each citing its source.

The keys are those of the shared training engine's configuration (batch_size is global,
lr = blr x batch_size / lr_base_size unless an absolute lr is set) plus the fine-tuning
augmentation keys (drop_path, auto_augment, reprob, mixup, cutmix, smoothing, mean, std...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fractaldb.errors import FractalDBError

RECIPE_DIR = Path(__file__).parent / "recipes"
REQUIRED = ("description", "source", "epochs", "batch_size", "opt", "blr", "lr_base_size")


def list_recipes() -> list[str]:
    """Names of the built-in recipes."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """Load a built-in recipe by name, or a recipe YAML file by path, and check its fields."""
    import yaml

    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FractalDBError(
            f"unknown recipe {name_or_path!r}; fix: use one of {', '.join(list_recipes())} "
            "or a path to a recipe .yaml"
        )
    try:
        recipe = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise FractalDBError(f"recipe {path} is not valid YAML ({err}); fix: correct it") from err
    missing = [k for k in REQUIRED if not isinstance(recipe, dict) or k not in recipe]
    if missing:
        raise FractalDBError(f"recipe {path} lacks {', '.join(missing)}; fix: add them")
    recipe["name"] = path.stem
    return recipe


def scaled_lr(recipe: dict[str, Any], batch_size: int) -> float:
    """The recipe's absolute lr, else blr x global batch / lr_base_size (DeiT and MAE convention)."""
    if recipe.get("lr") is not None:
        return float(recipe["lr"])
    return float(recipe["blr"]) * batch_size / float(recipe["lr_base_size"])
