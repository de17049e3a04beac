"""The ``initlab`` command line: a face on the library, never the other way round."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import InitlabError

console = Console()
if not console.is_terminal:  # files and CI logs: wide enough for the tables
    console = Console(width=140)


def load_factory(spec: str) -> Any:
    """Resolve ``path/to/file.py:factory`` or ``package.module:factory`` to the callable."""
    if ":" not in spec:
        raise click.BadParameter(f"{spec!r}: expected FILE.py:FACTORY or MODULE:FACTORY")
    where, attr = spec.rsplit(":", 1)
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise click.BadParameter(f"no such file: {where}")
        mod_spec = importlib.util.spec_from_file_location(path.stem, path)
        assert mod_spec is not None and mod_spec.loader is not None
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules.setdefault(path.stem, module)
        mod_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    factory = getattr(module, attr, None)
    if factory is None:
        names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise click.BadParameter(f"{where} has no {attr!r}; callables there: {', '.join(names)}")
    return factory


def make_example(shape: str, dtype: str, high: int) -> torch.Tensor:
    """A seeded example batch of ``shape`` (``8,3,32,32``): N(0,1) floats or integers below ``high``."""
    dims = tuple(int(s) for s in shape.replace("x", ",").split(",") if s.strip())
    g = torch.Generator().manual_seed(0)
    if dtype == "long":
        return torch.randint(0, high, dims, generator=g)
    return torch.randn(dims, generator=g)


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}")
    raise SystemExit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="initlab")
def main() -> None:
    """initlab: initialize PyTorch networks so they start training well."""


@main.command()
def schemes() -> None:
    """List every registered scheme with its formula."""
    from .schemes import SCHEMES

    table = Table(title="initlab schemes (initlab.SCHEMES)")
    for col in ("name", "std / bound", "fans", "gain", "random", "options"):
        table.add_column(col, overflow="fold")
    for s in SCHEMES.values():
        table.add_row(s.name, escape(s.formula), "yes" if s.uses_fans else "-", "yes" if s.uses_gain else "-",
                      "yes" if s.random else "-", ", ".join(s.kwargs) or "-")  # fmt: skip
    console.print(table)


def _plan_options(f: Any) -> Any:
    options = [
        click.argument("factory"),
        click.option("--example-shape", required=True, help="shape of one input batch, e.g. 8,3,32,32"),
        click.option("--example-dtype", type=click.Choice(["float", "long"]), default="float",
                     help="float inputs N(0,1), or long token ids"),
        click.option("--vocab", type=int, default=2, help="token ids are drawn below this (long inputs)"),
        click.option("--scheme", default="kaiming_normal", show_default=True),
        click.option("--rules", "rules_path", type=click.Path(exists=True, dir_okay=False),
                     help="a TOML or JSON rule file"),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--head-scale", type=float, default=1.0, show_default=True),
        click.option("--residual-scale/--no-residual-scale", default=True, show_default=True,
                     help="residual branch ends at gain x L^-1/2"),
        click.option("--preset", default=None, help="a model family's recipe (see `initlab presets`)"),
        click.option("--json", "as_json", is_flag=True, help="print the plan as JSON"),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


def _build_plan(factory: str, example_shape: str, example_dtype: str, vocab: int, scheme: str,
                rules_path: str | None, seed: int, head_scale: float, preset: str | None,
                residual_scale: bool = True) -> Any:  # fmt: skip
    """Build FACTORY's model and plan it; a bad input ends the command with its message."""
    from .plan import plan

    model = load_factory(factory)()
    example = make_example(example_shape, example_dtype, vocab)
    try:
        rules = None
        if rules_path:
            from .serialize import load_rules

            rules = load_rules(rules_path)
        return plan(model, scheme, example=example, rules=rules, seed=seed,
                    head_scale=head_scale, residual_scale=residual_scale, preset=preset)  # fmt: skip
    except InitlabError as exc:
        _fail(exc)


@main.command()
def presets() -> None:
    """List the model-family presets with their sources."""
    from .presets import PRESETS

    table = Table(title="initlab presets (initlab.init(..., preset=NAME))")
    table.add_column("name")
    table.add_column("source", overflow="fold")
    for p in PRESETS.values():
        table.add_row(p.name, escape(p.source))
    console.print(table)


@main.command("plan")
@_plan_options
@click.option(
    "--save", type=click.Path(dir_okay=False), help="save the plan (TOML or JSON by extension)"
)
def plan_cmd(as_json: bool, save: str | None, **options: Any) -> None:
    """Print the plan for FACTORY (FILE.py:FUNC or MODULE:FUNC, called with no arguments)."""
    p = _build_plan(**options)
    if save:
        from .serialize import save_plan

        save_plan(p, save)
    if as_json:
        click.echo(json.dumps(p.to_dict(), indent=2))
    else:
        click.echo(str(p))
        click.echo(p.graph.summary())


@main.command("init")
@_plan_options
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="where to save the initialized state_dict (.safetensors or .pt)")  # fmt: skip
def init_cmd(as_json: bool, out: str, **options: Any) -> None:
    """Initialize FACTORY's model and save its weights."""
    p = _build_plan(**options)
    try:
        p.apply()
    except InitlabError as exc:
        _fail(exc)
    state = {k: v.detach().contiguous() for k, v in p.model.state_dict().items()}
    if out.endswith(".safetensors"):
        try:
            from safetensors.torch import save_file
        except ImportError:
            _fail(
                InitlabError(
                    "saving .safetensors needs `pip install initlab[io]`; or use --out FILE.pt"
                )
            )
        # tied tensors share storage: safetensors refuses shared storage, so clone each
        save_file({k: v.clone() for k, v in state.items()}, out)
    else:
        torch.save(state, out)
    click.echo(json.dumps(p.to_dict(), indent=2) if as_json else str(p))
    console.print(f"saved {len(state)} tensors to {out}")


@main.command("doctor")
@click.argument("factory", required=False)
@click.option(
    "--demo", type=click.Choice(["makemore"]), help="the seed's makemore story on real names"
)
@click.option(
    "--data",
    "data_name",
    type=click.Choice(["digits", "mnist1d", "mnist5k", "names", "random"]),
    default="digits",
    show_default=True,
    help="the batch the model is examined on",
)
@click.option("--example-shape", help="with --data random: the input shape, e.g. 64,3,32,32")
@click.option("--classes", type=int, default=10, show_default=True, help="with --data random")
@click.option(
    "--steps",
    type=int,
    default=0,
    show_default=True,
    help="optimizer steps (on a copy) for update:data ratios",
)
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option("--html", type=click.Path(dir_okay=False), help="write a self-contained HTML report")
@click.option("--plots", type=click.Path(file_okay=False), help="write PNG plots into this folder")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="doctor-out",
    show_default=True,
    help="with --demo: where the plots and pages go",
)
def doctor_cmd(factory: str | None, demo: str | None, data_name: str, example_shape: str | None,
               classes: int, steps: int, batch_size: int, seed: int, as_json: bool,
               html: str | None, plots: str | None, out: str) -> None:  # fmt: skip
    """Diagnose FACTORY's model at initialization (or run --demo makemore).

    Exits 1 when a check fails, so it can gate a training script.
    """
    from .doctor import doctor

    if demo:
        from .doctor.demo import main_demo

        result = main_demo(out, steps=steps or 20)
        click.echo(result["text"])  # the summary table, then each report
        console.print(f"plots and pages: {', '.join(map(str, result['files']))}")
        return
    if factory is None:
        _fail(
            InitlabError(
                "give FILE.py:FACTORY (a function that builds the model), or --demo makemore"
            )
        )
    try:
        model = load_factory(factory)()
        if data_name == "random":
            if not example_shape:
                raise InitlabError("--data random needs --example-shape, e.g. 64,3,32,32")
            x = make_example(example_shape, "float", 2)
            y = torch.randint(
                0, classes, (x.shape[0],), generator=torch.Generator().manual_seed(seed)
            )
            data = [(x, y)]
        else:
            from .bench.data import load

            ds = load(data_name, seed=seed) if data_name != "names" else load("names", seed=42)
            x, y = ds.x_train[:batch_size], ds.y_train[:batch_size]
            n = min(len(ds.x_train), 8 * batch_size)
            data = [(ds.x_train[i : i + batch_size], ds.y_train[i : i + batch_size])
                    for i in range(0, n, batch_size)]  # fmt: skip
        report = doctor(model, x, y, data=data, steps=steps, seed=seed)
    except InitlabError as exc:
        _fail(exc)
    if html:
        report.save_html(html)
    if plots:
        report.plot(plots)
    click.echo(report.to_json(indent=1) if as_json else str(report))
    if not report.ok:
        raise SystemExit(1)


@main.command()
@click.option(
    "--suite",
    default="quick",
    show_default=True,
    type=click.Choice(
        [
            "quick",
            "makemore",
            "gradinit-table",
            "gradinit-deep",
            "depth",
            "residual",
            "cifar10",
            "all",
        ]
    ),
)
@click.option("--seeds", type=int, default=1, show_default=True, help="seeds 0..N-1")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N")
@click.option("--threads", type=int, default=1, show_default=True, help="torch threads (pinned)")
@click.option("--out", type=click.Path(file_okay=False), default="bench-out", show_default=True)
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="CIFAR-10 folder (the extracted python version) for --suite cifar10",
)
@click.option("--epochs", type=int, default=None, help="override the suite's epochs")
@click.option(
    "--models",
    default=None,
    help="cifar10: comma-separated models (vgg19, resnet110, resnet56, resnet20)",
)
def bench(suite: str, seeds: int, device: str, threads: int, out: str, data: str | None,
          epochs: int | None, models: str | None) -> None:  # fmt: skip
    """Reproduce the seeds' experiments on offline data; tables, JSON/CSV/Markdown and plots.

    The GPU recipe: initlab bench --suite cifar10 --data PATH --device cuda --seeds 4
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from .bench.run import run_suite, summarize

    t0 = time.perf_counter()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True) as bar:  # fmt: skip
        task = bar.add_task(f"bench {suite}", total=None)
        try:
            runs = run_suite(
                suite, seeds=seeds, out=out, threads=threads, device=device, data=data,
                epochs=epochs, models=models.split(",") if models else None,
                progress=lambda s: bar.update(task, description=s),
            )  # fmt: skip
        except (InitlabError, FileNotFoundError) as exc:
            bar.stop()
            _fail(exc)
    rows = summarize(runs)
    for name in dict.fromkeys(r["suite"] for r in rows):
        part = [r for r in rows if r["suite"] == name]
        table = Table(title=f"{name} (seeds {seeds}, {threads} thread(s))")
        cols = [c for c in part[0] if c not in ("suite", "seeds")]
        for c in cols:
            table.add_column(c, overflow="fold")
        for r in part:
            table.add_row(*(escape(r.get(c, "")) for c in cols))
        console.print(table)
    console.print(
        f"{len(runs)} runs in {time.perf_counter() - t0:.1f} s on {device}; results in {out}/"
    )


if __name__ == "__main__":  # pragma: no cover
    main()
