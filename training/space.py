"""What a Hugging Face Space needs to serve a finished run's model with the demo: written into OUTPUT/space/.

A Space runs only the files pushed to it, not this repository, so the folder holds the demo's own modules
(training/demo.py, inference.py, plots.py, copied from the installed package: the same code, not a second version),
an app.py of a few lines that calls them, requirements.txt, a Space card, and a few evaluation images as examples.
`scripts/push.py --space you/name OUTPUT` pushes it with the model files under model/; `python OUTPUT/space/app.py`
serves the same page locally from the run's folder.
"""

import shutil
from importlib import resources
from pathlib import Path

from training.data import ImageData
from training.images import decode_image

SPACE_MODULES = ("__init__.py", "demo.py", "inference.py", "plots.py")
EXAMPLES = 4
REQUIREMENTS = ["torch>=2.4", "torchvision>=0.19", "transformers>=5.0,<6", "safetensors", "pillow", "matplotlib",
                "gradio>=5"]
APP = '''"""The resnet-cbam demo of the model in ./model (pushed Space) or in the run folder above (local run)."""

from pathlib import Path

from training.demo import serve

HERE = Path(__file__).resolve().parent
MODEL = HERE / "model" if (HERE / "model" / "config.json").exists() else HERE.parent

if __name__ == "__main__":
    serve(str(MODEL), sorted((HERE / "examples").glob("*.png")), name={model_id!r})
'''
CARD = """---
title: {title}
emoji: 🔍
colorFrom: indigo
colorTo: green
sdk: gradio
app_file: app.py
pinned: false
{models}---

# {title}

A ResNet with CBAM attention, trained with resnet-cbam on {dataset}: its top labels for an image and, for each
CBAM, the spatial attention over the image and the strongest channel weights.
"""


def write_space(output_dir: Path, data: ImageData, model_id: str, dataset: str, hub_model: bool) -> Path:
    """OUTPUT/space/: app.py, requirements.txt, README.md (the Space card), training/ (the demo's modules) and
    examples/ (the first evaluation images, as PNG)."""
    space = Path(output_dir) / "space"
    shutil.rmtree(space, ignore_errors=True)
    (space / "training").mkdir(parents=True)
    (space / "examples").mkdir()
    package = resources.files("training")
    for name in SPACE_MODULES:
        (space / "training" / name).write_text((package / name).read_text())
    (space / "app.py").write_text(APP.format(model_id=model_id))
    (space / "requirements.txt").write_text("\n".join(REQUIREMENTS) + "\n")
    models = f"models:\n- {model_id}\n" if hub_model else ""
    (space / "README.md").write_text(CARD.format(title=f"{model_id.split('/')[-1]} demo", models=models,
                                                 dataset=dataset))
    split = data.eval_split
    raw = data.splits[split].with_format(None)
    for index in range(min(EXAMPLES, len(raw))):
        row = raw[index]
        label = "".join(c if c.isalnum() else "_" for c in data.label_names[row[data.label_column]])
        decode_image(row[data.image_column], split, index).save(space / "examples" / f"{index}_{label}.png")
    return space
