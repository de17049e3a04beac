"""The ``initlab`` command line: a face on the library, never the other way round.

Every user error ends the command with one line on stderr (what is wrong and the fix, in the
command line's own flags) and exit code 2; ``--debug`` adds the traceback. Exit codes: 0 success
(the doctor: healthy), 1 a doctor check failed, 2 bad usage or input, 3 an internal error.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import ForwardError, InitlabError

if TYPE_CHECKING:  # torch is imported by the commands that use it: `initlab --version` is instant
    import torch

console = Console(highlight=False)
if not console.is_terminal:  # files and CI logs: wide enough for the tables
    console = Console(width=140, highlight=False)
err_console = Console(stderr=True, highlight=False)

EXIT_OK, EXIT_UNHEALTHY, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3

EXIT_CODES = (
    "Exit codes: 0 success (doctor: healthy), 1 a doctor check failed, 2 bad usage or input "
    "(one line on stderr says what and how to fix it), 3 internal error (a bug in initlab: "
    "rerun with --debug for the traceback)."
)

WEIGHT_FORMATS = (".safetensors", ".pt", ".pth")
RULE_FORMATS = (".toml", ".json")
EXAMPLE_HINT = (
    "if that input is wrong, set --example-shape (and --example-dtype long --vocab N for token ids)"
)


class UsageProblem(InitlabError):
    """A bad command line or input: printed as one line, exit code 2."""


# ---------------------------------------------------------------------------------------------
# the group: errors, exit codes, --debug


class _Group(click.Group):
    """``click.Group`` whose :meth:`main` turns every error into one line and an exit code."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:  # fmt: skip
        argv = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in argv or os.environ.get("INITLAB_DEBUG", "") not in ("", "0")
        argv = [a for a in argv if a != "--debug"]
        try:
            with _fail_loud(debug):
                code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except SystemExit as exc:
            if not standalone_mode:
                raise
            sys.exit(exc.code)
        code = code if isinstance(code, int) else EXIT_OK
        if standalone_mode:
            sys.exit(code)
        return code


def _say_error(text: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(text)}", soft_wrap=True)


@contextlib.contextmanager
def _fail_loud(debug: bool) -> Iterator[None]:
    """Map exceptions to one line on stderr and an exit code (see :data:`EXIT_CODES`)."""
    try:
        yield
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except click.Abort:
        _say_error("aborted")
        raise SystemExit(130) from None
    except click.ClickException as exc:  # usage errors: bad flags and values
        no_args = getattr(click.exceptions, "NoArgsIsHelpError", None)
        if no_args is not None and isinstance(exc, no_args) and exc.ctx is not None:
            click.echo(exc.ctx.get_help())  # a bare `initlab`: the help, not an error
            raise SystemExit(EXIT_OK) from None
        if debug:
            traceback.print_exc()
        ctx = getattr(exc, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _say_error(f"{exc.format_message()}{where}")
        raise SystemExit(EXIT_USAGE) from None
    except ForwardError as exc:
        if debug:
            traceback.print_exc()
        _say_error(f"{exc.cause}; {EXAMPLE_HINT}")
        raise SystemExit(EXIT_USAGE) from None
    except InitlabError as exc:  # bad input, said by the library or the CLI
        if debug:
            traceback.print_exc()
        _say_error(str(exc))
        raise SystemExit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        _say_error("interrupted")
        raise SystemExit(130) from None
    except Exception as exc:  # a bug in initlab: say so, keep the traceback for --debug
        if debug:
            traceback.print_exc()
        _say_error(
            f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
            "traceback and report it)"
        )
        raise SystemExit(EXIT_INTERNAL) from None


# ---------------------------------------------------------------------------------------------
# loading the user's model


@contextlib.contextmanager
def _on_path(folder: str) -> Iterator[None]:
    """``folder`` first on ``sys.path`` while the user's file loads (its sibling imports)."""
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)


def _user_code_error(what: str, exc: BaseException) -> UsageProblem:
    """``exc``, raised by the user's code, as one line naming the innermost user frame."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "initlab" not in Path(f.filename).parts[-2:-1] and "importlib" not in f.filename]  # fmt: skip
    at = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return UsageProblem(f"{what} raised {type(exc).__name__}{at}: {exc}")


def load_factory(spec: str) -> Any:
    """Resolve ``path/to/file.py:factory`` or ``package.module:factory`` to the callable."""
    if ":" not in spec:
        raise UsageProblem(
            f"FACTORY {spec!r}: expected FILE.py:FUNC or MODULE:FUNC (a function or class that "
            "builds the model with no arguments), e.g. examples/models.py:mlp"
        )
    where, attr = spec.rsplit(":", 1)
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise UsageProblem(
                f"FACTORY {spec!r}: no such file {where!r} (from {Path.cwd()}); check the path"
            )
        name = path.stem if path.stem not in sys.modules else f"_initlab_user_{path.stem}"
        mod_spec = importlib.util.spec_from_file_location(name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise UsageProblem(f"FACTORY {spec!r}: {where} cannot be loaded as Python")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        folder = str(path.resolve().parent)
        try:
            with _on_path(folder):
                mod_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise _user_code_error(f"loading {where}", exc) from exc
        # the factory may import siblings lazily when called: keep its folder reachable
        if folder not in sys.path:
            sys.path.append(folder)
    else:
        if str(Path.cwd()) not in sys.path and "" not in sys.path:
            sys.path.append(str(Path.cwd()))
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as exc:
            missing = exc.name or where
            raise UsageProblem(
                f"FACTORY {spec!r}: no module named {missing!r}; give a file (FILE.py:FUNC) or a "
                "module importable from the current folder or the installed packages"
            ) from exc
        except Exception as exc:
            raise _user_code_error(f"importing {where}", exc) from exc
    if not hasattr(module, attr):
        names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise UsageProblem(
            f"FACTORY {spec!r}: {where} has no {attr!r}; callables there: "
            f"{', '.join(names) or 'none'}"
        )
    factory = getattr(module, attr)
    if not callable(factory):
        raise UsageProblem(
            f"FACTORY {spec!r}: {attr} is {_a(type(factory).__name__)}, not a function or class; "
            "name a function (or nn.Module class) that builds the model"
        )
    return factory


def _a(noun: str) -> str:
    """``noun`` with its indefinite article: ``an int``, ``a str``."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def build_model(spec: str) -> torch.nn.Module:
    """Call FACTORY with no arguments and check that it returned an ``nn.Module``."""
    import torch

    factory = load_factory(spec)
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        required = [p.name for p in sig.parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD,
                                                           p.KEYWORD_ONLY)]  # fmt: skip
        if required:
            raise UsageProblem(
                f"FACTORY {spec!r} needs arguments ({', '.join(required)}) but is called with "
                "none; add a function with none to your file, e.g. "
                f"`def make(): return {spec.rsplit(':', 1)[1]}(...)`, and pass FILE.py:make"
            )
    folder = spec.rsplit(":", 1)[0]
    ctx = (
        _on_path(str(Path(folder).resolve().parent))
        if folder.endswith(".py")
        else contextlib.nullcontext()
    )
    try:
        with ctx:
            model = factory()
    except Exception as exc:
        raise _user_code_error(f"FACTORY {spec!r}", exc) from exc
    if not isinstance(model, torch.nn.Module):
        raise UsageProblem(
            f"FACTORY {spec!r} returned {_a(type(model).__name__)}, not an nn.Module; it must "
            "build and return the model"
        )
    return model


def parse_shape(shape: str, flag: str = "--example-shape") -> tuple[int, ...]:
    """``"8,3,32,32"`` (or ``8x3x32x32``) as a tuple of positive integers."""
    parts = [s.strip() for s in shape.replace("x", ",").split(",") if s.strip()]
    try:
        dims = tuple(int(s) for s in parts)
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise UsageProblem(
            f"{flag} {shape!r}: expected positive integers separated by commas, e.g. 8,3,32,32 "
            "(batch first)"
        )
    return dims


def make_example(shape: str, dtype: str, high: int) -> torch.Tensor:
    """A seeded example batch of ``shape`` (``8,3,32,32``): N(0,1) floats or integers below ``high``."""
    import torch

    dims = parse_shape(shape)
    g = torch.Generator().manual_seed(0)
    if dtype == "long":
        return torch.randint(0, high, dims, generator=g)
    return torch.randn(dims, generator=g)


def check_out_file(path: str, flag: str, formats: tuple[str, ...] | None = None) -> Path:
    """Refuse an output file in a missing folder or with an unknown extension, before any work."""
    p = Path(path)
    if formats is not None and p.suffix.lower() not in formats:
        raise UsageProblem(
            f"{flag} {path}: unknown format {p.suffix or '(no extension)'!r}; the format is "
            f"chosen by the extension: {', '.join(formats)}"
        )
    if not p.parent.is_dir():
        raise UsageProblem(
            f"{flag} {path}: folder {str(p.parent)!r} does not exist; create it "
            f"(mkdir -p {p.parent}) or choose another path"
        )
    if p.is_dir():
        raise UsageProblem(f"{flag} {path}: is a folder; give a file name")
    return p


def check_out_dir(path: str, flag: str) -> Path:
    """An output folder: created with its parents; refused when it is a file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageProblem(f"{flag} {path}: is a file; give a folder")
    return p


def _matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


PLOT_NOTE = "note: plots left out: matplotlib is not installed (pip install initlab[plot])"


# ---------------------------------------------------------------------------------------------
# commands


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=EXIT_CODES)  # fmt: skip
@click.option("--debug", is_flag=True, help="show the traceback of an error (any position)")
@click.version_option(package_name="initlab")
def main(debug: bool) -> None:
    """initlab: initialize PyTorch networks so they start training well."""


@main.command(epilog=EXIT_CODES)
def schemes() -> None:
    """List every registered scheme with its formula."""
    from .schemes import SCHEMES

    table = Table(title="initlab schemes (initlab.SCHEMES)")
    for col in ("name", "std / bound", "fans", "gain", "random", "options"):
        table.add_column(col, overflow="fold")
    for s in SCHEMES.values():
        table.add_row(escape(s.name), escape(s.formula), "yes" if s.uses_fans else "-",
                      "yes" if s.uses_gain else "-", "yes" if s.random else "-",
                      escape(", ".join(s.kwargs) or "-"))  # fmt: skip
    console.print(table)


def _init_options(f: Any, *, default_scheme: str | None) -> Any:
    options = [
        click.option("--scheme", default=default_scheme, show_default=default_scheme is not None,
                     help="the default scheme (see `initlab schemes`)"),
        click.option("--rules", "rules_path", type=click.Path(exists=True, dir_okay=False),
                     help="a TOML or JSON rules file (README: Rules files)"),
        click.option("--preset", default=None, help="a model family's recipe (see `initlab presets`)"),
        click.option("--seed", type=int, default=0, show_default=True, help="the init's random seed"),
        click.option("--head-scale", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="the head's gain [default: 0.1; a tied embedding table: 0.15; 1 in "
                          "deep plain chains]"),
        click.option("--residual-scale/--no-residual-scale", default=True, show_default=True,
                     help="the default's residual rule: branch ends at gain x L^-1/2 with "
                          "norms; without norms, ends at 0 and inner layers x L^-1/(2m-2)"),
        click.option("--normalized-scale", type=click.FloatRange(min=0, min_open=True),
                     default=None, help="the gain factor of weight layers only a norm reads "
                     "[default: 0.25 with the default scheme; 1 for the plain gain, e.g. for SGD "
                     "at a large lr]"),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


def _plan_options(f: Any) -> Any:
    options = [
        click.argument("factory"),
        click.option("--example-shape", required=True, help="shape of one input batch, e.g. 8,3,32,32"),
        click.option("--example-dtype", type=click.Choice(["float", "long"]), default="float",
                     help="float inputs N(0,1), or long token ids"),
        click.option("--vocab", type=click.IntRange(min=1), default=2,
                     help="token ids are drawn below this (long inputs)"),
        click.option("--json", "as_json", is_flag=True, help="print only JSON on stdout"),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return _init_options(f, default_scheme=None)


def _load_rules(rules_path: str | None) -> Any:
    if not rules_path:
        return None
    from .serialize import load_rules

    return load_rules(rules_path)


def _build_plan(factory: str, example_shape: str, example_dtype: str, vocab: int, scheme: str,
                rules_path: str | None, seed: int, head_scale: float | None, preset: str | None,
                residual_scale: bool = True, normalized_scale: float | None = None,
                apply: bool = False) -> Any:  # fmt: skip
    """Build FACTORY's model and plan it (``apply``: initialize it as :func:`initlab.init` does,
    head calibration included); a bad input ends the command with its message."""
    from .planning import init, plan

    example = make_example(example_shape, example_dtype, vocab)
    rules = _load_rules(rules_path)
    model = build_model(factory)
    return (init if apply else plan)(model, scheme, example=example, rules=rules, seed=seed,
                                     head_scale=head_scale, residual_scale=residual_scale,
                                     normalized_scale=normalized_scale, preset=preset)  # fmt: skip


@main.command(epilog=EXIT_CODES)
def presets() -> None:
    """List the model-family presets with their sources."""
    from .presets import PRESETS

    table = Table(title="initlab presets (initlab.init(..., preset=NAME))")
    table.add_column("name")
    table.add_column("source", overflow="fold")
    for p in PRESETS.values():
        table.add_row(escape(p.name), escape(p.source))
    console.print(table)


@main.command("plan", epilog=EXIT_CODES)
@_plan_options
@click.option("--save", type=click.Path(dir_okay=False),
              help="save the plan; the format by extension: .toml or .json (as planned: "
                   "`initlab init --save` saves it with init's measured head)")  # fmt: skip
def plan_cmd(as_json: bool, save: str | None, **options: Any) -> None:
    """Print the plan for FACTORY (FILE.py:FUNC or MODULE:FUNC, called with no arguments)."""
    if save:
        check_out_file(save, "--save", RULE_FORMATS)
    p = _build_plan(**options)
    if save:
        from .serialize import save_plan

        save_plan(p, save)
    if as_json:
        click.echo(json.dumps(p.to_dict(), indent=2))
    else:
        click.echo(str(p))
        click.echo(p.graph.summary())
    if save:
        click.echo(f"saved the plan to {save}", err=True)


@main.command("init", epilog=EXIT_CODES)
@_plan_options
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="where to save the initialized state_dict; the format by extension: "
                   ".safetensors, or .pt/.pth (torch.save)")  # fmt: skip
@click.option("--save", type=click.Path(dir_okay=False),
              help="save the applied plan, measured head included (.toml or .json): "
                   "`--rules` with it draws these weights again")  # fmt: skip
def init_cmd(as_json: bool, out: str, save: str | None, **options: Any) -> None:
    """Initialize FACTORY's model and save its weights."""
    check_out_file(out, "--out", WEIGHT_FORMATS)
    if save:
        check_out_file(save, "--save", RULE_FORMATS)
    if out.lower().endswith(".safetensors") and importlib.util.find_spec("safetensors") is None:
        raise UsageProblem(
            f"--out {out}: writing .safetensors needs `pip install initlab[io]`; or use a .pt file"
        )
    p = _build_plan(**options, apply=True)
    state = {k: v.detach().contiguous() for k, v in p.model.state_dict().items()}
    if out.lower().endswith(".safetensors"):
        from safetensors.torch import save_file

        # tied tensors share storage: safetensors refuses shared storage, so clone each
        save_file({k: v.clone() for k, v in state.items()}, out)
    else:
        import torch

        torch.save(state, out)
    if save:
        from .serialize import save_plan

        save_plan(p, save)
    click.echo(json.dumps(p.to_dict(), indent=2) if as_json else str(p))
    click.echo(f"saved {len(state)} tensors to {out}", err=True)
    if save:
        click.echo(f"saved the plan to {save}", err=True)


OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3}


@contextlib.contextmanager
def _progress_bar(label: str, enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A rich bar on stderr with counts and time left; yields ``update(description, done, total)``."""
    if not enabled:
        yield lambda desc, done, total: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,  # fmt: skip
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                  console=err_console, transient=True) as bar:  # fmt: skip
        task = bar.add_task(label, total=None)

        def update(desc: str, done: int, total: int) -> None:
            bar.update(task, description=escape(desc), completed=done, total=max(total, done))

        yield update


@main.command("doctor", epilog=EXIT_CODES)
@click.argument("factory", required=False)
@click.option("--demo", type=click.Choice(["makemore"]),
              help="Karpathy's makemore (part 3) story on real names")  # fmt: skip
@click.option("--data", "data_name", type=click.Choice(["digits", "mnist1d", "mnist5k", "names", "random"]),
              default="digits", show_default=True, help="the batches the model is examined on")  # fmt: skip
@click.option("--example-shape", help="with --data random: the input shape, e.g. 64,3,32,32")
@click.option("--classes", type=click.IntRange(min=2), default=10, show_default=True,
              help="with --data random")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--scheme", default=None,
              help="examine initlab's init with this scheme instead of the factory's own")  # fmt: skip
@click.option("--rules", "rules_path", type=click.Path(exists=True, dir_okay=False),
              help="examine initlab's init with this rules file (TOML or JSON)")  # fmt: skip
@click.option("--preset", default=None, help="examine initlab's init with this model-family preset")
@click.option("--head-scale", type=click.FloatRange(min=0, min_open=True), default=None,
              help="with initlab's init: the output layer's std scale (e.g. 0.01)")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True,
              help="seeds the init, the batch order, labels and projections")  # fmt: skip
@click.option("--optimizer", type=click.Choice(list(OPTIMIZERS)), default="sgd", show_default=True,
              help="the optimizer of the --steps (on a copy)")  # fmt: skip
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="learning rate of the --steps [default: sgd 0.1, adam/adamw 0.001]")  # fmt: skip
@click.option("--steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="optimizer steps (on a copy) for update:data ratios")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print only the report as JSON on stdout")
@click.option("--html", type=click.Path(dir_okay=False), help="write a self-contained HTML report")
@click.option("--plots", type=click.Path(file_okay=False), help="write PNG plots into this folder")
@click.option("--out", type=click.Path(file_okay=False), default="doctor-out", show_default=True,
              help="with --demo: where the plots and pages go")  # fmt: skip
def doctor_cmd(factory: str | None, demo: str | None, data_name: str, example_shape: str | None,
               classes: int, batch_size: int, scheme: str | None, rules_path: str | None,
               preset: str | None, head_scale: float | None, seed: int, optimizer: str,
               lr: float | None, steps: int, as_json: bool, html: str | None, plots: str | None,
               out: str) -> int:  # fmt: skip
    """Diagnose FACTORY's model at initialization (or run --demo makemore).

    By default the model is examined as FACTORY built it; --scheme, --rules, --preset (with
    --seed, --head-scale) examine initlab's init of it instead. --steps runs the optimizer on a
    copy to measure update:data ratios. Exits 1 when a check fails, so it can gate a script.
    """
    import torch

    if html:
        check_out_file(html, "--html", (".html", ".htm"))
    if plots:
        check_out_dir(plots, "--plots")
    if demo:
        from .bench.demo import main_demo

        check_out_dir(out, "--out")
        result = main_demo(out, steps=steps or 20)
        click.echo(result["text"])  # the summary table, then each report
        click.echo(f"plots and pages: {', '.join(map(str, result['files']))}", err=True)
        return EXIT_OK
    if factory is None:
        raise UsageProblem(
            "give FACTORY (FILE.py:FUNC, a function that builds the model), or --demo makemore"
        )
    if data_name == "random" and not example_shape:
        raise UsageProblem("--data random needs --example-shape, e.g. 64,3,32,32")
    if example_shape and data_name != "random":
        raise UsageProblem(
            f"--example-shape is for --data random; --data {data_name} sets the input"
        )
    uses_init = any(v is not None for v in (scheme, rules_path, preset))
    if head_scale is not None and not uses_init:
        raise UsageProblem(
            "--head-scale applies to initlab's init: add --scheme (or --rules, --preset)"
        )
    lr = DEFAULT_LR[optimizer] if lr is None else lr
    rules = _load_rules(rules_path)
    model = build_model(factory)
    x, y, data = _doctor_data(data_name, example_shape, classes, batch_size, seed)
    setup: dict[str, Any] = {
        "factory": factory,
        "data": f"{data_name} ({'random N(0,1) inputs, ' + str(classes) + ' classes' if data_name == 'random' else 'training split'})",
    }
    flags = []
    if uses_init:
        from .planning import plan as make_plan

        p = make_plan(model, scheme or "kaiming_normal", example=x, rules=rules, seed=seed,
                      head_scale=head_scale, preset=preset)  # fmt: skip
        p.apply()
        parts = [f"scheme {scheme or 'kaiming_normal'}"]
        parts += [f"rules {rules_path}"] if rules_path else []
        parts += [f"preset {preset}"] if preset else []
        parts += [f"head_scale {head_scale}"] if head_scale else []
        setup["init"] = f"initlab ({', '.join(parts)}, seed {seed})"
        flags += [f"--scheme {scheme}"] if scheme else []
        flags += [f"--rules {rules_path}"] if rules_path else []
        flags += [f"--preset {preset}"] if preset else []
    else:
        setup["init"] = "as FACTORY built it (PyTorch's defaults unless it initializes itself)"
        p = None
    opt_cls = getattr(torch.optim, OPTIMIZERS[optimizer])
    from .diagnosis import doctor

    show = err_console.is_terminal  # on stderr: --json keeps stdout clean
    with _progress_bar("doctor", show) as update:
        report = doctor(model, x, y, data=data, steps=steps, seed=seed, plan=p, setup=setup,
                        optimizer=lambda params: opt_cls(params, lr=lr),
                        progress=update)  # fmt: skip
    has_plt = _matplotlib()
    if (html or plots) and not has_plt:
        click.echo(PLOT_NOTE, err=True)
    if html:
        report.save_html(html)
        click.echo(f"wrote {html}", err=True)
    if plots and has_plt:
        written = report.plot(plots)
        click.echo(f"wrote {len(written)} plots into {plots}", err=True)
    click.echo(report.to_json(indent=1) if as_json else report.text(cli=True))
    return EXIT_OK if report.ok else EXIT_UNHEALTHY


def _doctor_data(data_name: str, example_shape: str | None, classes: int, batch_size: int,
                 seed: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[Any, Any]]]:  # fmt: skip
    """The first batch ``(x, y)`` and up to 8 batches for the confidence band and the steps."""
    import torch

    if data_name == "random":
        x = make_example(example_shape or "", "float", 2)
        y = torch.randint(0, classes, (x.shape[0],), generator=torch.Generator().manual_seed(seed))
        return x, y, [(x, y)]
    from .bench.data import load

    try:
        ds = load(data_name, seed=seed) if data_name != "names" else load("names", seed=42)
    except (FileNotFoundError, ImportError) as exc:
        raise UsageProblem(f"--data {data_name}: {exc}") from exc
    x, y = ds.x_train[:batch_size], ds.y_train[:batch_size]
    n = min(len(ds.x_train), 8 * batch_size)
    data = [(ds.x_train[i : i + batch_size], ds.y_train[i : i + batch_size])
            for i in range(0, n, batch_size)]  # fmt: skip
    return x, y, data


BENCH_SUITES = (
    "quick",
    "makemore",
    "gradinit-table",
    "depth",
    "residual",
    "cifar10",
    "models",
    "gradinit-deep",
    "all",
)


@main.command(epilog=EXIT_CODES)
@click.option("--suite", default="quick", show_default=True, type=click.Choice(list(BENCH_SUITES)))
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="repeat each run with seeds 0..N-1")  # fmt: skip
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="torch threads (pinned)")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False), default="bench-out", show_default=True)
@click.option("--data", type=click.Path(exists=True, file_okay=False), default=None,
              help="CIFAR-10 folder (the extracted python version) for --suite cifar10")  # fmt: skip
@click.option(
    "--epochs", type=click.IntRange(min=1), default=None, help="override the suite's epochs"
)
@click.option("--models", default=None,
              help="cifar10: comma-separated models (vgg19, resnet110, resnet56, resnet20); models: "
                   "architectures (gpt2, bert, llama, qwen2, mamba, t5, bart, whisper, vit, swin, "
                   "convnext, resnet50, vit-timm)")  # fmt: skip
def bench(suite: str, seeds: int, device: str, threads: int, out: str, data: str | None,
          epochs: int | None, models: str | None) -> None:  # fmt: skip
    """Reproduce the papers' experiments on offline data; tables, JSON/CSV/Markdown and plots.

    The GPU recipe: initlab bench --suite cifar10 --data PATH --device cuda --seeds 4
    """
    from .bench.run import run_suite, suite_size, summarize

    chosen = None
    if models is not None:
        chosen = [m.strip() for m in models.split(",") if m.strip()]
        if not chosen:
            raise UsageProblem("--models is empty: give comma-separated names, e.g. vgg19,resnet20")
    check_out_dir(out, "--out")
    t0 = time.perf_counter()
    total = suite_size(suite, seeds, chosen)
    with _progress_bar(f"bench {suite}", err_console.is_terminal) as update:
        done = [0]

        def step(desc: str) -> None:
            update(desc, done[0], total)
            done[0] += 1

        runs = run_suite(suite, seeds=seeds, out=out, threads=threads, device=device, data=data,
                         epochs=epochs, models=chosen, progress=step)  # fmt: skip
    if not runs:
        raise UsageProblem(
            f"--suite {suite} ran nothing with these options; check --models and --seeds"
        )
    rows = summarize(runs)
    for name in dict.fromkeys(r["suite"] for r in rows):
        part = [r for r in rows if r["suite"] == name]
        table = Table(title=escape(f"{name} (seeds {seeds}, {threads} thread(s))"))
        cols = [c for c in part[0] if c not in ("suite", "seeds")]
        for c in cols:
            table.add_column(escape(c), overflow="fold")
        for r in part:
            table.add_row(*(escape(r.get(c, "")) for c in cols))
        console.print(table)
    console.print(
        escape(
            f"{len(runs)} runs in {time.perf_counter() - t0:.1f} s on {device}; results in {out}/"
        )
    )
    if not _matplotlib():
        click.echo(PLOT_NOTE, err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
