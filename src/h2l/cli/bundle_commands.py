"""``h2l export``, ``verify``, ``keygen`` and ``sign``: write a bundle, check it, publish it signed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..atomic import check_output_file
from ..errors import UsageError
from .app import Format, Provider, Quantize, Router, app, emit_json, err, handled
from .params import given, positional
from .render import out, print_report, print_summary

# ------------------------------------------------------------------ export / verify

@app.command()
@handled
def export(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Option("--out", help="Bundle folder to create.")],
    teacher: Annotated[Optional[Path], typer.Argument(help="Teacher .npz.", metavar="TEACHER",
                                                      show_default=False)] = None,
    fmt: Annotated[Format, typer.Option("--format", help="onnx (bundle) or npy (UnifyWeaver layouts).")] = Format.onnx,
    student: Annotated[Optional[Path], typer.Option("--student", help="Student checkpoint from `h2l distill`.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
    no_fold: Annotated[bool, typer.Option("--no-fold", help="Keep the literal torch graph.")] = False,
    quantize: Annotated[Quantize, typer.Option("--quantize", help="int8: dynamic int8 student weights "
                                               "(output projection stays float32).")] = Quantize.none,
    min_cosine: Annotated[float, typer.Option("--min-cosine", help="Student-vs-teacher gate at export.")] = 0.98,
    mh_id: Annotated[int, typer.Option("--mh-id", help="Projection id in npy file names.")] = 1,
    routed: Annotated[bool, typer.Option("--routed", help="Add teacher_routed.onnx (docs/routing.md).")] = False,
    router: Annotated[Router, typer.Option("--router", help="screen: proven bound; ivf: k-means groups, "
                                           "an estimate only.")] = Router.screen,
    candidates: Annotated[Optional[int], typer.Option("--candidates", help="Routed: K heads scored exactly "
                                                      "(default: chosen from the teacher).")] = None,
    with_encoder: Annotated[bool, typer.Option("--with-encoder", help="Add encoder.onnx + tokenizer.json "
                                               "(all-MiniLM-L6-v2) so the bundle takes text.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    sign_key: Annotated[Optional[Path], typer.Option("--sign-key", help="Private key from `h2l keygen`: "
                                                     "publish the bundle signed (manifest.sig).")] = None,
    old_teacher: Annotated[Optional[Path], typer.Option("--teacher", hidden=True)] = None,  # the old spelling
) -> None:
    """Export the teacher (and student) as a verified bundle, or as UnifyWeaver .npy files."""
    from ..importers.npz import load_npz

    teacher = positional(teacher, old_teacher, "the teacher .npz", "--teacher", "`h2l export T.npz --out DIR`")

    if fmt is Format.npy:
        onnx_only = given(ctx, "student", "as_json", "quantize", "no_fold", "sign_key", "routed", "router",
                          "candidates", "with_encoder", "min_cosine")
        if onnx_only:
            verb = "does" if len(onnx_only) == 1 else "do"
            raise UsageError(f"--format npy writes the teacher's vectors only; {', '.join(onnx_only)} {verb} not "
                             "apply", f"drop {', '.join(onnx_only)} or use --format onnx")
    else:
        if given(ctx, "mh_id"):
            raise UsageError("--mh-id names the .npy files of --format npy; a bundle has none",
                             "drop --mh-id, or pass --format npy")
        routed_only = given(ctx, "router", "candidates")
        if routed_only and not routed:
            raise UsageError(f"{' and '.join(routed_only)} {'applies' if len(routed_only) == 1 else 'apply'} to "
                             "the routed teacher", "add --routed, or drop them")
    t = load_npz(teacher)
    if fmt is Format.npy:
        from ..exporters.npy import export_npy

        written = export_npy(t, out_dir, mh_id=mh_id, force=force)
        out.print(f"wrote {len(written)} .npy files to {out_dir} (float32 little-endian, shape (d,))")
        return
    from ..export import export_onnx

    res = export_onnx(t, out_dir, student=student, fold_graph=not no_fold, force=force, min_cosine=min_cosine,
                      quantize=quantize.value, sign_key=sign_key, routed=routed, router=router.value,
                      candidates=candidates, with_encoder=with_encoder)
    if as_json:
        emit_json(res.manifest)
        return
    out.print(f"wrote bundle {res.out}")
    for entry in res.manifest["files"]:
        out.print(f"  {entry['path']:44} {entry['bytes']:>10} B  sha256 {entry['sha256'][:16]}…", markup=False)
    print_summary(res.manifest["verification"].get("summary", {}))
    if routed:
        report = json.loads((res.out / "reports" / "routing.json").read_text())
        out.print(report["note"], markup=False)
        out.print(report["verdict"], markup=False)


@app.command()
@handled
def verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder.")],
    provider: Annotated[Provider, typer.Option("--provider", help="cpu, cuda, auto (CUDA if usable) or all.")]
    = Provider.auto,
    min_cosine: Annotated[float, typer.Option("--min-cosine", help="Gate on mean student-vs-teacher cosine.")] = 0.98,
    queries: Annotated[Optional[Path], typer.Option("--queries", help=".npy (n×d), Q-A JSON or JSONL.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
    junit: Annotated[Optional[Path], typer.Option("--junit", help="Also write each check as a JUnit XML test "
                                                  "case to this file (written on failure too).")] = None,
    public_key: Annotated[Optional[Path], typer.Option("--public-key", help="Pinned KEY.pub: refuse (exit 5) "
                                                       "a bundle it did not sign.")] = None,
) -> None:
    """Check integrity, the I/O contract, golden vectors and parity; non-zero exit on any failure."""
    from ..verify.checks import verify_bundle
    from ..verify.report import raise_for_failures

    if junit is not None:
        check_output_file(junit, force=True)  # a missing folder fails now, not after the checks
    if public_key is not None and queries is not None:  # refuse an unsigned bundle before embedding queries for it
        from ..bundle.signing import verify as check_signed

        check_signed(bundle, public_key)
    q, labels = (None, None) if queries is None else _load_queries(queries, bundle)
    report = verify_bundle(bundle, provider=provider.value, min_cosine=min_cosine, queries=q, labels=labels,
                           public_key=public_key)
    if junit is not None:
        from ..atomic import write_bytes_atomic
        from ..verify.junit import junit_xml

        write_bytes_atomic(junit, junit_xml(report, str(bundle)))
    if as_json:
        emit_json(report.to_dict())
    else:
        print_report(report)
    if public_key is not None:  # verify_bundle refused (exit 5) unless the pinned key signed it
        from ..bundle.signing import key_id, load_public_key

        err.print(f"signature: valid, key id {key_id(load_public_key(public_key))}", markup=False)
    raise_for_failures(report)


@app.command()
@handled
def keygen(
    out_path: Annotated[Path, typer.Option("--out", help="Private key to write (0600); KEY.pub goes beside it.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key pair.")] = False,
) -> None:
    """Make an ed25519 key pair for signing bundles: keep KEY private, pin KEY.pub in services."""
    from ..bundle.signing import keygen as make_keys

    kid = make_keys(out_path, force=force)
    out.print(f"wrote {out_path} (private, mode 0600) and {out_path}.pub; key id {kid}", markup=False)


@app.command()
@handled
def sign(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder.")],
    key: Annotated[Path, typer.Option("--key", help="Private key from `h2l keygen`.")],
) -> None:
    """Check a bundle's hashes, then sign its manifest (writes manifest.sig atomically)."""
    from ..bundle.publish import sign_bundle

    kid = sign_bundle(bundle, key)
    out.print(f"signed {bundle}/manifest.json; key id {kid}", markup=False)


def _load_queries(path: Path, bundle: Path):
    from ..verify.queries import load_bundle_queries

    return load_bundle_queries(path, bundle)
