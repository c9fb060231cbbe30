"""The ``zkapex`` verbs: each reads and checks its inputs (:mod:`._inputs`), calls one protocol
stage on parameters (:mod:`zkapex_jax.protocol.api`) and writes its outputs."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from .._errors import ZkapexError
from ._args import _say
from ._inputs import (as_data, check_model_ckpt, check_srs, data_or_builtin, family_of, is_hf_dir, keystore_of,
                      load_client, load_hf_dir, load_params, model_and_params, n_examples, provider_splits,
                      refuse_outputs, stage_config, study_config, subsample, user_split)

EXIT_VALID, EXIT_REJECTED, EXIT_MALFORMED = 0, 1, 2


def cmd_keys(args) -> int:
    from ..protocol import prepare_keys
    from ..protocol._circuits import relation
    from ..protocol.api import commit_spec

    ks = keystore_of(args, "keystore")
    cs = commit_spec(args.block_size, args.logrows, wrap=args.wrap, keystore=ks,  # validates B before any build
                     column_range=args.column_range)
    t0 = time.perf_counter()
    built = []
    for art in prepare_keys(cs, ks, jobs=args.jobs, kmaxes=[args.kmax] if args.kmax else None):
        spec = art.spec
        shape = ({"column_range_columns": spec.n_columns} if isinstance(spec, relation.RangeSpec) else
                 {"kmax": spec.kmax, "chunk_blocks": spec.chunk_blocks, "bound_units": 1 + float(spec.epsilon)})
        built.append({"spec": spec.key, **shape, "num_rows": art.num_rows, "vk_sha256": art.meta["vk_sha256"],
                      "pk_bytes": art.meta["pk_bytes"], "srs_insecure": art.srs_insecure})
    _say(json.dumps({"logrows": cs.logrows, "wrap": cs.wrap, "circuits": built, "seconds": round(time.perf_counter() - t0, 2)}, indent=1))
    if any(b["srs_insecure"] for b in built):
        _say("WARNING: locally generated SRS — INSECURE, for tests only (pass --srs with a ceremony file)")
    return 0


def cmd_train(args) -> int:
    """[provider] The global model: the family's shipped weights with a new classifier
    (``--pretrained``) or a fresh initialisation, trained on ``--data`` (or the built-in
    Fashion-MNIST global split) with the provider's recipe (AdamW, warm-up, cosine)."""
    import jax

    from ..models.train import save_checkpoint
    from ..protocol import provider

    refuse_outputs(args.out, force=args.force, checkpoint=True)
    fam = family_of(args)
    hf_dir = is_hf_dir(args.model)
    if args.pretrained and fam.pretrained_fn is None and not hf_dir:
        raise ZkapexError(f"--model {args.model!r} ships no pretrained weights: drop --pretrained")
    data = data_or_builtin(args, fam, "training data", min_examples=2, builtin="global_train")
    if not args.data:
        _say(f"training data: the built-in global split, {data.n} images")
    recipe = stage_config(args, fam, n_train=n_examples(data)).global_recipe
    k_init, k_fit = jax.random.split(jax.random.PRNGKey(args.seed))
    seed = int(jax.random.randint(k_init, (), 0, 2**31 - 1))
    if args.pretrained:  # a Hugging Face directory's own weights, or the family's shipped ones
        init = load_hf_dir(os.path.realpath(args.model))[1] if hf_dir else fam.pretrained_fn(seed)
    else:
        init = fam.init(seed)
    t0 = time.perf_counter()
    theta_g, _ = provider.train_global(fam, init, as_data(fam, data), recipe, key=k_fit)
    save_checkpoint(args.out, theta_g, {"model": args.model, "pretrained": bool(args.pretrained),
                                        "recipe": dataclasses.asdict(recipe),
                                        "data": os.path.basename(os.path.normpath(args.data)) if args.data else "built-in"})
    acc = fam.accuracy(theta_g, as_data(fam, data))
    unit = "sequences" if fam.kind == "lm" else "images"
    _say(f"global model: {n_examples(data)} {unit}, {recipe.epochs} epochs (AdamW lr {recipe.lr:g}, batch "
         f"{recipe.batch}) in {time.perf_counter() - t0:.1f} s; train accuracy {acc:.3f} → {args.out}")
    return 0


def cmd_mask(args) -> int:
    from ..protocol import provider
    from ..studies import image as pl

    refuse_outputs(args.out, force=args.force)
    fam, theta_g = model_and_params(args, args.global_ckpt)
    st = stage_config(args, fam)
    layout = st.layout(fam, theta_g)  # the pattern selects kernels
    own = provider_splits(args, fam)
    if own is None:
        cfg = study_config(args, fam)
        data = pl.load_data(cfg, args.seed)
        forget, retain = data.forget_train, data.retain_train
        meta = {"forget_classes": list(cfg.forget_classes)}
    else:
        forget, retain, meta = own
    forget = subsample(forget, st.mask.n_forget, args.seed)
    retain = subsample(retain, st.mask.n_retain, args.seed + 1)
    meta.update(n_forget=n_examples(forget), n_retain=n_examples(retain))
    scores = provider.request_scores(fam, theta_g, as_data(fam, forget), as_data(fam, retain), st.mask,
                                     chunk_size=st.curvature.chunk)
    m = provider.publish_request(scores, st.mask, layout=layout, meta=meta)
    digest = m.save(args.out)
    extra = f", {m.num_protected} protected" if st.mask.protect else ""
    _say(f"mask: {m.num_masked} of {m.size} weights ({m.fraction:.2%}){extra} → {args.out} (sha256 {digest[:16]}…)")
    return 0


def cmd_fisher(args) -> int:
    import jax

    from ..protocol import client

    refuse_outputs(args.out, force=args.force)
    fam, params = model_and_params(args, args.params)
    st = stage_config(args, fam)
    layout = st.layout(fam, params)
    data = subsample(data_or_builtin(args, fam, "client data"), st.curvature.n_examples, args.seed)
    if args.augment:
        if fam.kind != "classifier":
            raise ZkapexError("--augment applies to image classifiers (shifted and mirrored copies of the images)")
        from ..data import augment

        data = type(data)(*augment(data.x, data.y, copies=args.augment, seed=args.seed))
    try:
        curvature = client.curvature(fam, params, as_data(fam, data), layout, st.curvature,
                                     key=jax.random.PRNGKey(args.seed))
    except ValueError as e:  # a curvature this family cannot give (e.g. 'true' for a language model)
        raise ZkapexError(f"--curvature {args.curvature}: {e}") from None
    curvature.save(args.out)
    _say(f"curvature ({curvature.kind}): {layout.num_blocks} blocks of {layout.block_size} from {n_examples(data)} "
         f"examples → {args.out}")
    return 0


def cmd_personalize(args) -> int:
    import jax

    from ..models.train import save_checkpoint
    from ..protocol import client

    refuse_outputs(args.out, force=args.force, checkpoint=True)
    if Path(args.out).resolve() == Path(args.global_ckpt).resolve():
        raise ZkapexError("--out must differ from --global")
    fam, theta_g = model_and_params(args, args.global_ckpt)
    data = data_or_builtin(args, fam, "client data", min_examples=2)
    recipe = stage_config(args, fam, n_train=n_examples(data)).personal_recipe
    t0 = time.perf_counter()
    theta_p, hist = client.personalize(fam, theta_g, as_data(fam, data), recipe, key=jax.random.PRNGKey(args.seed))
    save_checkpoint(args.out, theta_p, {"model": args.model, "personalized_from": str(args.global_ckpt),
                                        "recipe": dataclasses.asdict(recipe)})
    acc = fam.accuracy(theta_p, as_data(fam, data))
    unit = "sequences" if fam.kind == "lm" else "images"
    decay = f", layer decay {recipe.layer_decay:g}" if recipe.layer_decay else ""
    _say(f"personalized: {n_examples(data)} {unit}, {recipe.epochs} epochs (AdamW lr {recipe.lr:g}{decay}) in "
         f"{time.perf_counter() - t0:.1f} s; train accuracy {acc:.3f} → {args.out}")
    return 0


def cmd_commit(args) -> int:
    from ..protocol import api, save_commitment

    refuse_outputs(args.out, args.secrets, force=args.force)
    for p in (args.out, args.secrets):
        if Path(p).resolve() in (Path(args.params).resolve(), Path(args.fisher).resolve()):
            raise ZkapexError(f"output {p} is one of the inputs")
    curvature = api.Curvature.load(args.fisher)
    params = load_params(args.params)
    ks = keystore_of(args)
    cs = api.commit_spec(curvature.layout.block_size, args.logrows, wrap=args.wrap, keystore=ks,
                         column_range=args.column_range)
    com, sec = api.commit(params, curvature, cs, client_id=args.client_id, keystore=ks, progress=True)
    com = save_commitment(args.out, com, sec, args.secrets)
    _say(f"commitment: {com.num_blocks} blocks × ({cs.block_size} inverse-Fisher columns + θp), logrows "
         f"{cs.logrows} → {args.out} (sha256 {com.sha256[:16]}…); secrets → {args.secrets} (keep private)")
    return 0


def cmd_unlearn(args) -> int:
    from ..models.train import save_checkpoint
    from ..protocol import api

    refuse_outputs(args.out, force=args.force, checkpoint=True)
    for other in (args.params, args.fisher, args.commitment, args.secrets, args.mask):
        if other is not None and Path(other).resolve() == Path(args.out).resolve():
            raise ZkapexError(f"--out {args.out} is one of the inputs")
    com, sec, curvature, params, mask = load_client(args)
    theta_u, u = api.unlearn(params, mask, com, sec, keystore=keystore_of(args), curvature=curvature)
    save_checkpoint(args.out, theta_u, {"unlearned_from": str(args.params), "commitment_sha256": com.sha256})
    _say(f"unlearned: {int((u.mask == 1).sum())} weights removed ({int((u.mask == 2).sum())} protected) in "
         f"{len(u.witnesses)} blocks; certified within {u.bound_units:.3f} units of 2^-{com.theta_exp} → {args.out}")
    return 0


def cmd_prove(args) -> int:
    from ..protocol import api

    if os.path.lexists(args.out):
        raise ZkapexError(f"{args.out} exists; choose a new bundle directory")
    if args.opening is not None:
        if os.path.lexists(args.opening) and not args.force:
            raise ZkapexError(f"{args.opening} exists; pass --force to replace it")
        if Path(args.opening).resolve() in {Path(x).resolve() for x in (args.params, args.fisher, args.commitment,
                                                                         args.secrets, args.mask, args.out)
                                            if x is not None}:
            raise ZkapexError(f"--opening {args.opening} is one of the inputs or the bundle")
    if args.executor == "ray" and args.ray_address:
        from ..protocol.prover import check_ray_address

        check_ray_address(args.ray_address)  # before any work: ray.init would retry for ever
    com, sec, curvature, params, mask = load_client(args)
    unlearned = load_params(args.unlearned) if args.unlearned else None
    opening_tmp = None
    if args.opening is not None:  # written beside, renamed over --opening only once the bundle exists
        opening_tmp = Path(args.opening).with_name(f".{Path(args.opening).name}.{os.getpid()}.tmp")
    t0 = time.perf_counter()
    try:
        out = api.prove(params, mask, com, sec, request_id=args.request_id, out_dir=args.out, unlearned=unlearned,
                        keystore=keystore_of(args), curvature=curvature, jobs=args.jobs, progress=True,
                        executor=args.executor, ray_address=args.ray_address, opening_out=opening_tmp)
        if opening_tmp is not None:
            os.replace(opening_tmp, args.opening)
    finally:
        if opening_tmp is not None and opening_tmp.exists():
            opening_tmp.unlink()
    st = json.loads((Path(out) / "statement.json").read_text())
    _say(f"bundle: {len(st['proofs'])} proofs for {st['prover']['masked_blocks']} masked blocks → {out} "
         f"({time.perf_counter() - t0:.1f} s)" + (f"; deployment opening → {args.opening} (give it only with "
                                                   "the deployed model)" if args.opening else ""))
    return 0


def cmd_verify(args) -> int:
    from ..core.mask import Mask
    from ..protocol import api, load_commitment
    from ..protocol.binding import Opening

    try:
        if (args.deployed is None) != (args.opening is None):
            raise ZkapexError("--deployed and --opening go together (the deployed model and its opening)")
        if args.max_forget_accuracy is not None and args.forget is None:
            raise ZkapexError("--max-forget-accuracy needs --forget (the provider's forget set to audit on)")
        if args.forget is not None and args.deployed is None:
            raise ZkapexError("--forget audits the deployed model: give --deployed and --opening")
        com = load_commitment(args.commitment)
        mask = Mask.load(args.mask)
        deployed = opening = forget_accuracy = None
        if args.deployed is not None:
            deployed, opening = load_params(args.deployed), Opening.load(args.opening)
        if args.forget is not None:
            forget_accuracy = _forget_audit_of(args, deployed)
        res = api.verify(args.bundle, com, mask, keystore=keystore_of(args, "keystore"), client_id=args.client_id,
                         request_id=args.request_id, deployed=deployed, opening=opening, progress=not args.json,
                         forget_accuracy=forget_accuracy, max_forget_accuracy=args.max_forget_accuracy)
    except (ValueError, OSError) as e:  # ZkapexError/ArtifactError are ValueErrors
        _emit_verify(args, {"valid": False, "malformed": True, "reason": str(e)})
        return EXIT_MALFORMED
    except RuntimeError as e:  # the provider's own key store could not be built (ezkl stage failed)
        _emit_verify(args, {"valid": False, "malformed": True, "reason": f"key store: {e}"})
        return EXIT_MALFORMED
    warnings = []
    if res.valid and args.request_id is None:
        warnings.append(f"no --request-id given: any bundle of this client for this mask verifies (this one is for "
                        f"request {ascii(res.request_id)}); pin the request you issued")
    if res.valid and args.deployed is None:
        warnings.append("the deployed model was not checked: VALID covers the model the commitments define; pass "
                        "--deployed CKPT --opening FILE to check a deployed checkpoint")
    _emit_verify(args, {"valid": res.valid, "reason": res.reason, "client_id": res.client_id,
                        "request_id": res.request_id, "proofs": res.n_proofs, "bound_units": res.bound_units,
                        "insecure_srs": res.insecure_srs, "details": res.details, "warnings": warnings})
    return EXIT_VALID if res.valid else EXIT_REJECTED


def _forget_audit_of(args, deployed):
    """``params -> (accuracy, n)`` on ``--forget`` for ``--model`` (checked against the deployed
    checkpoint's shapes, the data read, before any verification work)."""
    fam = family_of(args)
    check_model_ckpt(fam, deployed, args.deployed)
    data = user_split(fam, args.forget, "forget (audit)", args=args)
    n = n_examples(data) * (data.shape[1] - 1 if fam.kind == "lm" else 1)  # trials: examples, or predicted tokens
    return lambda params: (fam.accuracy(params, as_data(fam, data)), n)


def _emit_verify(args, d):
    if args.json:
        _say(json.dumps(d))
    elif d.get("malformed"):
        print(f"MALFORMED: {d['reason']}", file=sys.stderr, flush=True)
    else:
        _say(f"client {d['client_id']!r} ({ascii(d['client_id'])}), request {d['request_id']!r} "
             f"({ascii(d['request_id'])})")
        _say(("VALID: " if d["valid"] else "REJECTED: ") + d["reason"])
        audit = (d.get("details") or {}).get("forget_audit")
        if audit is not None and d["valid"]:
            _say(f"forget audit: accuracy {audit['accuracy']:.3f} on {audit['n']} "
                 + ("(reported only: no --max-forget-accuracy)" if audit["max_accuracy"] is None
                    else f"≤ {audit['max_accuracy']:.3f}: passed"))
        for w in d.get("warnings", []):
            _say(f"NOTE: {w}")
        if d.get("insecure_srs"):
            _say("WARNING: the SRS was generated locally — INSECURE, test only")


def cmd_demo(args) -> int:
    from ..studies.demo import run_demo, validate_demo

    model, B = ("vit-tiny", 16) if args.big else (args.model, args.block_size)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ZkapexError(f"--out {out} exists and is not an empty directory; choose a new one")
    check_srs(args)
    validate_demo(model, B, args.pattern, args.logrows, args.quick, wrap=args.wrap)
    s = run_demo(args.out, model=model, block_size=B, logrows=args.logrows, wrap=args.wrap, jobs=args.jobs, seed=args.seed,
                 quick=args.quick, pattern=args.pattern, cache=args.cache, srs=args.srs, executor=args.executor)
    return EXIT_VALID if s["valid"] else EXIT_REJECTED