"""stack.yml: variable substitution, schema validation with key paths and lines, typed objects."""

from hydro_serving.stack.loader import function_from_dict, load_stack, parse_stack, substitute
from hydro_serving.stack.model import (
    AsyncPolicy,
    Batching,
    FunctionSpec,
    Provider,
    Scale,
    Stack,
    Stage,
    Streaming,
    is_local_model_ref,
    parse_duration,
)
from hydro_serving.stack.options import check_options

__all__ = [
    "AsyncPolicy",
    "Batching",
    "FunctionSpec",
    "Provider",
    "Scale",
    "Stack",
    "Stage",
    "Streaming",
    "check_options",
    "function_from_dict",
    "is_local_model_ref",
    "load_stack",
    "parse_duration",
    "parse_stack",
    "substitute",
]
