"""Contracts across a router's chain: deploy-time compatibility and run-time input validation.

The router never talks to the store or to other functions' specs, so it cannot look signatures
up itself. Whoever deploys a router (the gateway, which holds every deployed spec and the store)
passes a ``signature_of(function_name)`` callable here:

* :func:`check_chain` refuses a chain whose stage outputs do not satisfy the next stage's inputs,
  naming both stages and the field, so an incompatible pipeline never goes live;
* :func:`resolve_stage_signatures` returns the signatures to write into the router spec's
  ``options.stage_signatures`` so the running router can validate its input without a lookup;
* :func:`first_stage_signature` is what the running router validates a request against.

A function without a declared signature (``signature_of`` returns None, or a signature with no
fields) is unknown and fits anything: we refuse only what is provably incompatible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hydro_serving.contract import ContractError, Field, Signature
from hydro_serving.stack.model import FunctionSpec, Stage

SignatureOf = Callable[[str], Signature | None]

#: The key in a router spec's ``options`` where the deployed stage signatures live.
STAGE_SIGNATURES_OPTION = "stage_signatures"


def _consumers(stage: Stage) -> list[str]:
    """Functions that receive a stage's input: every variant, and every shadow (it gets a copy)."""
    return [*stage.functions, *(s for s in stage.shadow if s not in stage.functions)]


def check_chain(router: FunctionSpec, signature_of: SignatureOf) -> None:
    """Raise :class:`ContractError` (400) unless every stage can feed the next one.

    For consecutive stages i and i+1, each variant of stage i must feed each variant (and each
    shadow) of stage i+1, because any combination may be chosen at run time. The error names the
    router, both stages (by position and function) and the field.
    """
    chain = router.chain
    for i in range(len(chain) - 1):
        upstream_stage, downstream_stage = chain[i], chain[i + 1]
        for up in upstream_stage.functions:
            up_sig = signature_of(up)
            if up_sig is None or not up_sig.outputs:
                continue
            for down in _consumers(downstream_stage):
                down_sig = signature_of(down)
                if down_sig is None or not down_sig.inputs:
                    continue
                try:
                    up_sig.check_feeds(down_sig, up, down)
                except ContractError as exc:
                    raise ContractError(
                        f"pipeline '{router.name}' is incompatible between stage {i + 1} ({up}) and "
                        f"stage {i + 2} ({down}): {exc.message}",
                        field=exc.field,
                        stage=down,
                        function=router.name,
                        details={
                            "between": f"{up} -> {down}",
                            "from_stage": i + 1,
                            "to_stage": i + 2,
                            "from_function": up,
                            "to_function": down,
                        },
                    ) from None


def _merge_inputs(signatures: Iterable[tuple[str, Signature]], router_name: str) -> tuple[Field, ...]:
    """The union of inputs; the same field declared with different dtypes is a contract error."""
    merged: dict[str, Field] = {}
    owner: dict[str, str] = {}
    for fn, sig in signatures:
        for fld in sig.inputs:
            seen = merged.get(fld.name)
            if seen is None:
                merged[fld.name] = fld
                owner[fld.name] = fn
            elif seen.dtype != fld.dtype:
                raise ContractError(
                    f"pipeline '{router_name}': the variants of stage 1 disagree on input '{fld.name}' "
                    f"({owner[fld.name]} takes {seen.dtype}, {fn} takes {fld.dtype})",
                    field=fld.name, stage=fn, function=router_name,
                )
    return tuple(merged.values())


def first_stage_signature(router: FunctionSpec, signature_of: SignatureOf) -> Signature | None:
    """The signature a pipeline request must satisfy, or None when stage 1 declares nothing.

    With an experiment in stage 1, the request must carry the inputs *all* variants need (their
    union): otherwise the same request would be accepted or refused depending on the dice.
    """
    if not router.chain:
        return None
    known = [(fn, sig) for fn in router.chain[0].functions if (sig := signature_of(fn)) is not None and sig.inputs]
    if not known:
        return None
    return Signature(inputs=_merge_inputs(known, router.name))


def pipeline_signature(router: FunctionSpec, signature_of: SignatureOf) -> Signature | None:
    """What a pipeline takes and answers, for its V2 metadata: stage 1's inputs, the last stage's outputs.

    The outputs are those of the last stage's first variant that declares any (variants of one
    stage answer alike: :func:`check_chain` checks them against what follows, or the caller sees them).
    """
    if not router.chain:
        return None
    first = first_stage_signature(router, signature_of)
    outputs: tuple[Any, ...] = ()
    for fn in router.chain[-1].functions:
        sig = signature_of(fn)
        if sig is not None and sig.outputs:
            outputs = sig.outputs
            break
    if first is None and not outputs:
        return None
    return Signature(inputs=first.inputs if first is not None else (), outputs=outputs)


def resolve_stage_signatures(router: FunctionSpec, signature_of: SignatureOf) -> dict[str, dict[str, Any]]:
    """``{function: Signature.to_dict()}`` for every chain function (variants and shadows) that declares one.

    The gateway stores this in the router spec's ``options.stage_signatures`` at deploy time.
    """
    out: dict[str, dict[str, Any]] = {}
    for stage in router.chain:
        for fn in [*stage.functions, *stage.shadow]:
            if fn in out:
                continue
            sig = signature_of(fn)
            if sig is not None and (sig.inputs or sig.outputs):
                out[fn] = sig.to_dict()
    return out


def signatures_from_options(options: Mapping[str, Any], router_name: str = "router") -> dict[str, Signature]:
    """Parse ``options.stage_signatures`` back into signatures (the router does this at load)."""
    raw = options.get(STAGE_SIGNATURES_OPTION) or {}
    if not isinstance(raw, Mapping):
        raise ContractError(
            f"options.{STAGE_SIGNATURES_OPTION} of '{router_name}' must map function names to signatures",
            field=f"options.{STAGE_SIGNATURES_OPTION}", function=router_name,
        )
    return {
        str(fn): Signature.from_dict(sig, where=f"options.{STAGE_SIGNATURES_OPTION}.{fn}")
        for fn, sig in raw.items()
    }
