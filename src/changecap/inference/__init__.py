"""Using trained models: the predictor, evaluation runner and HTML report."""

from changecap.inference.evaluate import ModelEvaluation, evaluate_model
from changecap.inference.predictor import CaptionResult, ChangeCaptioner, preprocess_pair
from changecap.inference.preprocess import PreprocessConfig
from changecap.inference.report import write_html_report

__all__ = [
    "CaptionResult",
    "ChangeCaptioner",
    "ModelEvaluation",
    "PreprocessConfig",
    "evaluate_model",
    "preprocess_pair",
    "write_html_report",
]
