"""``hydro render``: write what a platform needs to run the stack, without running anything.

``hydro render knative`` turns stack.yml into Knative Service manifests: to review, to commit to a
GitOps repository, or to pipe into ``kubectl apply -f -``. ``hydro deploy --provider knative``
applies the very same manifests.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from hydro_serving.replica import contract
from hydro_serving.stack import Stack, load_stack


def store_for_cluster(option: str | None, stack: Stack) -> str | None:
    """The store Knative pods read: ``--store``, else the stack's ``provider.store``, else ``HYDRO_STORE``.

    The same order as ``hydro demo``: a stack that names its store is explicit; without one, the variable
    every other command reads (``hydro model``, the gateway) is used (issue 14: render used to ignore it).
    """
    return option or stack.provider.store or os.environ.get(contract.STORE_ENV) or None


@click.group()
def render() -> None:
    """Render platform manifests from stack.yml."""


@render.command("knative")
@click.option("-f", "--file", "stack_file", default="stack.yml", show_default=True, type=click.Path(dir_okay=False),
              help="The stack file.")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write one <function>.yaml per Service here (default: all of them to stdout, multi-document).")
@click.option("-n", "--namespace", default="default", show_default=True,
              help="Namespace of functions that do not set their own.")
@click.option("--image-prefix", default=None, metavar="REGISTRY/",
              help="Prefix every image with a registry, e.g. registry.example.com:5000/")
@click.option("--store", default=None, metavar="s3://BUCKET/PREFIX",
              help="The model store the pods read (else the stack's provider.store, else HYDRO_STORE).")
@click.option("--store-endpoint", default=None, metavar="URL",
              help="AWS_ENDPOINT_URL for the pods, e.g. http://minio.hydro.svc.cluster.local:9000 "
                   "(or put it in the store Secret).")
@click.option("--store-secret", default="hydro-store", show_default=True, metavar="NAME",
              help="Secret with the store credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...), as envFrom.")
@click.option("--no-store-secret", is_flag=True, help="Use no Secret (credentials come from the pod's identity).")
@click.option("--filter", "names", multiple=True, metavar="NAME", help="Only these functions (repeatable).")
@click.option("--validate-against", "crd", type=click.Path(dir_okay=False), default=None, metavar="CRD.yaml",
              help="Check every manifest against the Knative Service CRD's OpenAPI schema before writing.")
def knative(stack_file: str, out_dir: str | None, namespace: str, image_prefix: str | None, store: str | None,
            store_endpoint: str | None, store_secret: str, no_store_secret: bool, names: tuple[str, ...],
            crd: str | None) -> None:
    """One serving.knative.dev/v1 Service per function (and router)."""
    from hydro_serving.builder.knative import KnativeValidator, render_stack, to_yaml, write_manifests
    stack = load_stack(stack_file)
    store = store_for_cluster(store, stack)
    manifests = render_stack(stack, names, namespace=namespace, image_prefix=image_prefix, store=store,
                             store_endpoint=store_endpoint, store_secret=None if no_store_secret else store_secret)
    if crd:
        KnativeValidator(crd).validate_all(manifests)
    if out_dir is None:
        click.echo("---\n".join(to_yaml(m) for m in manifests), nl=False)
        return
    for path in write_manifests(manifests, Path(out_dir)):
        click.echo(f"wrote {path}")
    if crd:
        click.echo(f"{len(manifests)} manifest(s) valid against {crd}")
