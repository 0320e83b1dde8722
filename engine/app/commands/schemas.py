"""`changefold schemas`: what the schema registry holds (format=avro)."""

from __future__ import annotations

import json

import click

from engine.core.config import Settings
from engine.core.errors import ChangefoldError


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the subjects as JSON.")
@click.pass_obj
def schemas(settings: Settings, as_json: bool) -> None:
    """List the schema registry's subjects, their versions and compatibility mode.

    With CHANGEFOLD_FORMAT=avro, Connect registers a key and a value subject per topic
    (`<topic>-key`, `<topic>-value`); each version has the schema id the messages
    carry. With format json there is no registry and nothing to list.
    """
    import httpx

    from engine.lab.stack.registry import list_subjects

    stack = settings.stack
    if not stack.avro:
        raise ChangefoldError(
            "the format is json (CHANGEFOLD_FORMAT), so there is no schema registry: the "
            "events carry their schemas. Set CHANGEFOLD_FORMAT=avro and run `changefold "
            "stack up` to run one"
        )
    try:
        subjects = list_subjects(stack.registry_url)
    except httpx.TransportError as exc:
        raise ChangefoldError(
            f"the schema registry at {stack.registry_url} does not answer ({exc}); "
            "`changefold stack up` starts it (CHANGEFOLD_REGISTRY_PORT sets its port)"
        ) from None
    except httpx.HTTPStatusError as exc:
        raise ChangefoldError(
            f"the schema registry at {stack.registry_url} answered "
            f"HTTP {exc.response.status_code} to {exc.request.url}"
        ) from None
    if as_json:
        click.echo(json.dumps(subjects, indent=2))
        return
    if not subjects:
        click.echo(f"no subjects in the registry at {stack.registry_url} yet")
        return
    width = max(len(s["subject"]) for s in subjects)
    click.echo(f"{'subject':<{width}}  {'compatibility':<13}  versions (version:id)")
    for s in subjects:
        versions = " ".join(f"{v['version']}:{v['id']}" for v in s["versions"])
        click.echo(f"{s['subject']:<{width}}  {s['compatibility'] or '?':<13}  {versions}")
