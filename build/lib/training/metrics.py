"""Classification metrics as an `evaluate` metric defined here, so nothing is fetched from the Hub at run time."""

import datasets
import evaluate
import numpy as np


class ClassificationMetrics(evaluate.Metric):
    """Accuracy, per-class accuracy (recall of each class) and the confusion matrix (rows: true, columns: predicted).

    >>> metric = ClassificationMetrics(keep_in_memory=True)
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0], num_classes=2)["accuracy"]
    0.6666666666666666
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Accuracy, per-class accuracy and confusion matrix of a single-label classifier.",
            citation="",
            inputs_description="predictions and references: class indices; num_classes: the number of classes.",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, num_classes: int | None = None) -> dict:
        predictions, references = np.asarray(predictions, dtype=np.int64), np.asarray(references, dtype=np.int64)
        num_classes = num_classes or int(max(predictions.max(initial=0), references.max(initial=0))) + 1
        confusion = np.bincount(references * num_classes + predictions, minlength=num_classes**2)
        confusion = confusion.reshape(num_classes, num_classes)
        per_class_total = confusion.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class = np.where(per_class_total > 0, confusion.diagonal() / per_class_total, np.nan)
        return {
            "accuracy": float(confusion.trace() / max(confusion.sum(), 1)),
            "per_class_accuracy": per_class.tolist(),
            "confusion_matrix": confusion.tolist(),
        }


def classification_metrics() -> ClassificationMetrics:
    """In memory: no cache file that several processes of one DDP run would share."""
    return ClassificationMetrics(keep_in_memory=True)


def compute_accuracy(eval_prediction) -> dict[str, float]:
    """The Trainer's compute_metrics during training: accuracy only, so each epoch's log entry stays scalar."""
    logits, labels = eval_prediction.predictions, eval_prediction.label_ids
    predictions = np.asarray(logits).argmax(axis=-1)
    return {"accuracy": classification_metrics().compute(predictions=predictions, references=labels)["accuracy"]}
