"""The web demo of a trained model (Gradio): an image in, its top labels and what each CBAM attends to out.

The model is loaded once, as a user loads it (`AutoModelForImageClassification.from_pretrained(...,
trust_remote_code=True)`, training/inference.py's load_model), and kept in memory between requests. The attention
picture is the one of scripts/attention_maps.py and the model card (inference.save_attention_map). A file that is
not an image, or one too large, gives a message in the page; the server goes on serving.

This module, inference.py and plots.py are also what a Space runs (training/space.py copies them next to its
app.py): they import torch, transformers, PIL, matplotlib and gradio only.
"""

import tempfile
from collections.abc import Sequence
from pathlib import Path

import gradio as gr
import torch
from PIL import Image

from training.inference import class_probabilities, load_model, preprocess_image, save_attention_map

MAX_PIXELS = 40_000_000  # larger uploads are refused with a message (a 12 MP photo is 12,000,000)
MAX_UPLOAD = "25mb"  # Gradio refuses larger files with its own message
TITLE = "ResNet-CBAM: what the attention sees"


def read_image(path: str | Path) -> Image.Image:
    """An uploaded file as a PIL image, or a gr.Error saying why not (shown in the page)."""
    name = Path(path).name
    try:
        image = Image.open(path)
    except Exception as error:  # not an image at all: a text file, a PDF, a truncated header
        raise gr.Error(f"{name} is not an image this demo can read ({type(error).__name__}). Upload a PNG, JPEG, "
                       "WebP, BMP or GIF file.") from error
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise gr.Error(f"{name} is {width}x{height} pixels, more than this demo takes ({MAX_PIXELS:,}); "
                       "scale it down first.")
    return image


class Demo:
    """The model in memory and the function the page calls."""

    def __init__(self, model_name_or_path: str, top_k: int = 5, device: str | None = None):
        self.model, self.processor = load_model(model_name_or_path, device)
        self.device = next(self.model.parameters()).device
        self.top_k = min(top_k, self.model.config.num_labels)
        self.pictures = tempfile.TemporaryDirectory(prefix="resnet-cbam-demo-")

    def classify(self, path: str | None, tta: bool = False) -> tuple[dict[str, float], str]:
        """{label: probability} and the path of the attention picture of one uploaded image file."""
        if path is None:
            raise gr.Error("Upload an image, or pick one of the examples.")
        with read_image(path) as image:
            try:
                image.load()
            except Exception as error:  # a header that opens but data that does not decode
                raise gr.Error(f"{Path(path).name} could not be decoded ({type(error).__name__}: {error}).") \
                    from error
            pixels = preprocess_image(self.processor, image)
        with torch.inference_mode():
            probabilities = class_probabilities(self.model, pixels[None].to(self.device), "flip" if tta else "none")[0]
        labels = {self.model.config.id2label[i]: float(p) for i, p in enumerate(probabilities.tolist())}
        if not self.model.cbam_names:  # a plain ResNet (cbam_placement none): labels only
            return labels, None
        picture = Path(self.pictures.name) / f"{Path(path).stem}-attention.png"
        save_attention_map(self.model, pixels, self.processor.image_mean, self.processor.image_std, picture,
                           title=Path(path).name)
        return labels, str(picture)


def build_demo(model_name_or_path: str, examples: Sequence[str | Path] = (), top_k: int = 5,
               device: str | None = None, name: str | None = None) -> gr.Blocks:
    """The page: an image file input with examples, a flip-TTA checkbox, the top-k labels and the attention
    picture (the input image is its first panel)."""
    demo = Demo(model_name_or_path, top_k, device)
    with gr.Blocks(title=TITLE) as page:
        gr.Markdown(f"# {TITLE}\nModel `{name or model_name_or_path}`: drop an image, or pick an example. Below "
                    "the labels: each CBAM's spatial attention over the image and its strongest channel weights.")
        with gr.Row():
            with gr.Column():
                # a file input, not gr.Image: gr.Image opens the upload itself and fails without a message on
                # anything that is not an image; here read_image says what is wrong with it
                image = gr.File(label="image file (PNG, JPEG, WebP, ...)", type="filepath")
                tta = gr.Checkbox(label="flip TTA (average with the mirror image)", value=False)
                button = gr.Button("Classify", variant="primary")
                if examples:
                    gr.Examples([[str(path)] for path in examples], inputs=[image])
            with gr.Column():
                labels = gr.Label(num_top_classes=demo.top_k, label="prediction")
                attention = gr.Image(type="filepath", label="CBAM attention", elem_id="attention")
        button.click(demo.classify, inputs=[image, tta], outputs=[labels, attention])
        image.upload(demo.classify, inputs=[image, tta], outputs=[labels, attention])
    return page


def default_examples(model_name_or_path: str) -> list[Path]:
    """A run folder's own examples (space/examples, written by training/space.py); none for a Hub id."""
    return sorted((Path(model_name_or_path) / "space" / "examples").glob("*.png"))


def serve(model_name_or_path: str, examples: Sequence[str | Path] = (), top_k: int = 5, device: str | None = None,
          name: str | None = None, **launch):
    """Build the page and serve it (Gradio's launch options: server_name, server_port, share, ...)."""
    return build_demo(model_name_or_path, examples, top_k, device, name).launch(max_file_size=MAX_UPLOAD, **launch)
