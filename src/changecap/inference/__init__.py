"""Using trained models: the predictor, evaluation runner and HTML report."""

from changecap.inference.evaluate import ModelEvaluation, evaluate_model
from changecap.inference.predictor import CaptionResult, ChangeCaptioner, preprocess_pair
from changecap.inference.report import write_html_report
from changecap.models.preprocess import PreprocessConfig

__all__ = [
    "CaptionResult",
    "ChangeCaptioner",
    "ModelEvaluation",
    "PreprocessConfig",
    "evaluate_model",
    "preprocess_pair",
    "write_html_report",
]
