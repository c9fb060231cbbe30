"""The zkapex command: keys / commit / unlearn / prove / verify on a tiny statement, exit codes."""

import json
import shutil

import numpy as np
import pytest

from zkapex_jax import cli
from zkapex_jax.protocol.api import Curvature
from zkapex_jax.studies.demo import demo_story
from zkapex_jax.core.blocks import BlockLayout
from zkapex_jax.core.mask import Mask
from zkapex_jax.core.params import get_paths, set_paths
from zkapex_jax.models.train import load_checkpoint, save_checkpoint

from conftest import build_model_cached

PATH = "vit/encoder/layer/0/attention/attention/query/bias"  # 16 weights of vit-test: 4 blocks of 4


@pytest.fixture(scope="module")
def files(tmp_path_factory, zk_shared):
    d = tmp_path_factory.mktemp("cli")
    (d / "provider").symlink_to(zk_shared["provider"], target_is_directory=True)  # the session's provider keys
    _, params = build_model_cached("vit-test", seed=0)
    flat = get_paths(params, [PATH])
    from zkapex_jax.core.params import set_paths

    rng = np.random.default_rng(0)
    params = set_paths(params, {PATH: np.asarray(rng.normal(size=flat[PATH].shape) * 0.05, dtype=np.float32)})
    save_checkpoint(d / "pers", params)
    layout = BlockLayout.from_params(params, PATH, 4)
    g = rng.normal(size=(layout.num_blocks, 12, 4))
    fisher = np.einsum("kni,knj->kij", g, g) / 12 + 1e-3 * np.eye(4)
    Curvature(fisher, layout).save(d / "fisher.npz")
    m = np.zeros(16, dtype=bool)
    m[[1, 6, 7, 12]] = True
    Mask.from_dense({PATH: m}, fraction=0.25, method="test").save(d / "mask.json")
    m2 = m.copy()
    m2[0] = True
    Mask.from_dense({PATH: m2}, fraction=0.3, method="test").save(d / "mask2.json")
    return d


def run(*args):
    return cli.main([str(a) for a in args])


@pytest.mark.slow
def test_full_flow_and_exit_codes(files, capsys):
    d = files
    assert run("keys", "--block-size", 4, "--logrows", 11, "--keystore", d / "provider") == 0
    assert "INSECURE" in capsys.readouterr().out
    commit = ["commit", "--params", d / "pers", "--fisher", d / "fisher.npz", "--client-id", "alice",
              "--out", d / "com.npz", "--secrets", d / "sec.npz", "--logrows", 11]
    assert run(*commit) == 0
    before = (d / "com.npz").read_bytes(), (d / "sec.npz").read_bytes()
    # never overwrite without --force; never the same path twice
    assert run(*commit) == 2 and "--force" in capsys.readouterr().err
    assert run(*commit[:-4], "--secrets", d / "com.npz", "--force") == 2
    assert ((d / "com.npz").read_bytes(), (d / "sec.npz").read_bytes()) == before
    client = ["--params", d / "pers", "--fisher", d / "fisher.npz", "--commitment", d / "com.npz",
              "--secrets", d / "sec.npz", "--mask", d / "mask.json"]
    assert run("unlearn", *client, "--out", d / "unl") == 0
    theta_u, _ = load_checkpoint(d / "unl")
    u = np.asarray(get_paths(theta_u, [PATH])[PATH])
    assert np.all(u[[1, 6, 7, 12]] == 0)
    assert run("unlearn", *client, "--out", d / "unl") == 2  # exists: refused without --force
    assert run("prove", *client, "--request-id", "r1", "--out", d / "bundle", "--jobs", 2,
               "--unlearned", d / "unl", "--opening", d / "opening.npz") == 0
    capsys.readouterr()
    # the whole deployed model: VALID as written; with the head changed, REJECTED
    v = ["--commitment", d / "com.npz", "--keystore", d / "provider", "--mask", d / "mask.json", "--request-id", "r1"]
    assert run("verify", d / "bundle", *v, "--deployed", d / "unl", "--opening", d / "opening.npz", "--json") == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["details"]["deployed_checked"] and rep["details"]["rest_parameters"] > 10 and not rep["warnings"]
    head = "classifier/kernel"
    tampered = set_paths(theta_u, {head: np.asarray(get_paths(theta_u, [head])[head]) * 1.5})
    save_checkpoint(d / "unl-head", tampered)
    assert run("verify", d / "bundle", *v, "--deployed", d / "unl-head", "--opening", d / "opening.npz") == 1
    assert "outside the statement" in capsys.readouterr().out
    assert run("verify", d / "bundle", *v, "--deployed", d / "unl-head") == 2  # --opening missing
    capsys.readouterr()
    # the forget audit on the deployed model: images it predicts as labelled are "not forgotten"
    from zkapex_jax.models import family
    fam = family("vit-test")
    c = fam.config
    x = np.random.default_rng(1).uniform(size=(24, c.image_size, c.image_size, c.num_channels)).astype(np.float32)
    np.savez(d / "forget.npz", x=x, y=np.argmax(fam.logits(theta_u, x), -1))
    dep = [*v, "--deployed", d / "unl", "--opening", d / "opening.npz", "--model", "vit-test", "--forget", d / "forget.npz"]
    assert run("verify", d / "bundle", *dep, "--max-forget-accuracy", 0.5) == 1
    assert "not forgotten" in capsys.readouterr().out
    assert run("verify", d / "bundle", *dep, "--max-forget-accuracy", 1.0, "--json") == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["details"]["forget_audit"]["passed"] and rep["details"]["forget_audit"]["n"] == 24
    assert run("verify", d / "bundle", *dep[:-4], "--model", "vit-demo", "--forget", d / "forget.npz") == 2
    assert "does not match --model" in capsys.readouterr().err
    # a deployed model that is not the certified one: exit 1, no bundle
    bad = set_paths(theta_u, {PATH: np.where(np.arange(16) == 1, u.ravel()[0], u.ravel()).astype(np.float32).reshape(u.shape)})
    save_checkpoint(d / "unl-bad", bad)
    assert run("prove", *client, "--request-id", "r1", "--out", d / "bundle-bad", "--unlearned", d / "unl-bad") == 1
    assert "masked weight" in capsys.readouterr().err and not (d / "bundle-bad").exists()
    v = ["--commitment", d / "com.npz", "--keystore", d / "provider"]
    assert run("verify", d / "bundle", *v, "--mask", d / "mask.json", "--request-id", "r1") == 0
    out = capsys.readouterr().out
    assert "client 'alice'" in out and "request 'r1'" in out and "\nVALID" in out and "INSECURE" in out
    # rejected: other mask, other request
    assert run("verify", d / "bundle", *v, "--mask", d / "mask2.json", "--json") == 1
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["reason"].startswith("statement's mask digest")
    assert run("verify", d / "bundle", *v, "--mask", d / "mask.json", "--request-id", "r2") == 1
    assert "REJECTED" in capsys.readouterr().out
    # malformed: truncated statement, missing commitment, garbage mask
    bad = d / "bad-bundle"
    shutil.copytree(d / "bundle", bad)
    (bad / "statement.json").write_text((bad / "statement.json").read_text()[:50])
    assert run("verify", bad, *v, "--mask", d / "mask.json") == 2
    assert "statement.json" in capsys.readouterr().err
    assert run("verify", d / "bundle", "--commitment", d / "nope.json", "--mask", d / "mask.json") == 2
    (d / "junk.json").write_text("{]")
    assert run("verify", d / "bundle", *v, "--mask", d / "junk.json") == 2
    # prove refuses to overwrite; nothing half-written
    assert run("prove", *client, "--request-id", "r1", "--out", d / "bundle") == 2


def test_changes_outside_the_statement_are_refused(files, capsys):
    """The commitment binds every parameter, not only the statement's kernels: a personalized
    checkpoint whose head differs from the committed one is refused (exit 2), and `prove
    --unlearned` refuses a deployed model with the head changed (exit 1, no bundle, no opening)."""
    d = files
    assert run("commit", "--params", d / "pers", "--fisher", d / "fisher.npz", "--client-id", "bob",
               "--out", d / "com-w.npz", "--secrets", d / "sec-w.npz", "--logrows", 11) == 0
    params, _ = load_checkpoint(d / "pers")
    head = "classifier/kernel"
    changed = set_paths(params, {head: np.asarray(get_paths(params, [head])[head]) + 0.25})
    save_checkpoint(d / "pers-head", changed)
    base = ["--fisher", d / "fisher.npz", "--commitment", d / "com-w.npz", "--secrets", d / "sec-w.npz",
            "--mask", d / "mask.json"]
    capsys.readouterr()
    assert run("unlearn", "--params", d / "pers-head", *base, "--out", d / "unl-w") == 2
    assert "not the committed personalized model" in capsys.readouterr().err and not (d / "unl-w").exists()
    assert run("prove", "--params", d / "pers", *base, "--request-id", "r", "--out", d / "bundle-w",
               "--unlearned", d / "pers-head", "--opening", d / "open-w.npz") == 1
    err = capsys.readouterr().err
    assert "classifier/kernel" in err and "outside the statement" in err
    assert not (d / "bundle-w").exists() and not (d / "open-w.npz").exists()


def test_unlearn_without_the_fisher_uses_the_committed_inverse(files, capsys):
    """The secrets carry Â as committed: `unlearn` needs no --fisher and gives the same model as
    with it; secrets of an older zkapex (no Â) without --fisher: exit 2, nothing written."""
    from zkapex_jax.protocol import artifacts, load_commitment, load_secrets
    from zkapex_jax.protocol.commitments import SECRETS_FORMAT, VERSION

    d = files
    assert run("commit", "--params", d / "pers", "--fisher", d / "fisher.npz", "--client-id", "carol",
               "--out", d / "com-c.npz", "--secrets", d / "sec-c.npz", "--logrows", 11) == 0
    com = load_commitment(d / "com-c.npz")
    sec = load_secrets(d / "sec-c.npz", com)
    assert sec.inverse_q is not None and sec.inverse_q.dtype == np.int32 and sec.inverse_q.shape == (4, 4, 4)
    base = ["--params", d / "pers", "--commitment", d / "com-c.npz", "--mask", d / "mask.json"]
    assert run("unlearn", *base, "--secrets", d / "sec-c.npz", "--out", d / "unl-c") == 0
    assert run("unlearn", *base, "--secrets", d / "sec-c.npz", "--fisher", d / "fisher.npz", "--out", d / "unl-f") == 0
    a = np.asarray(get_paths(load_checkpoint(d / "unl-c")[0], [PATH])[PATH])
    b = np.asarray(get_paths(load_checkpoint(d / "unl-f")[0], [PATH])[PATH])
    # the same committed integers, whichever route: equal well within a quarter of one θ unit
    np.testing.assert_allclose(a, b, rtol=0, atol=2.0 ** -(com.theta_exp + 2))
    arrs, meta = artifacts.load_arrays(d / "sec-c.npz", SECRETS_FORMAT, (VERSION,))
    arrs.pop("inverse_q")
    artifacts.save_arrays(d / "sec-old.npz", SECRETS_FORMAT, VERSION, arrs, meta)
    capsys.readouterr()
    assert run("unlearn", *base, "--secrets", d / "sec-old.npz", "--out", d / "unl-old") == 2
    assert "pass --fisher" in capsys.readouterr().err and not (d / "unl-old").exists()
    assert run("unlearn", *base, "--secrets", d / "sec-old.npz", "--fisher", d / "fisher.npz",
               "--out", d / "unl-old") == 0


@pytest.mark.slow
def test_amortized_column_range_flow(files, capsys):
    """`--column-range amortized`: the provider keys the column range circuit with the buckets, the
    bundle carries its range proofs, verify says VALID; a bundle stripped of them is REJECTED (exit
    1); an unknown mode exits 2."""
    from conftest import rewrite_statement

    d = files
    assert run("keys", "--block-size", 4, "--logrows", 11, "--wrap", 1, "--column-range", "amortized",
               "--keystore", d / "provider") == 0
    keyed = json.loads(capsys.readouterr().out.split("WARNING")[0])
    assert any("column_range_columns" in c for c in keyed["circuits"])
    assert run("commit", "--params", d / "pers", "--fisher", d / "fisher.npz", "--client-id", "dora",
               "--out", d / "com-a.npz", "--secrets", d / "sec-a.npz", "--logrows", 11, "--wrap", 1,
               "--column-range", "amortized") == 0
    client = ["--params", d / "pers", "--commitment", d / "com-a.npz", "--secrets", d / "sec-a.npz",
              "--mask", d / "mask.json"]
    assert run("prove", *client, "--request-id", "r1", "--out", d / "bundle-a") == 0
    v = ["--commitment", d / "com-a.npz", "--keystore", d / "provider", "--mask", d / "mask.json"]
    capsys.readouterr()
    assert run("verify", d / "bundle-a", *v) == 0 and "\nVALID" in capsys.readouterr().out
    shutil.copytree(d / "bundle-a", d / "bundle-a2")
    rewrite_statement(d / "bundle-a2", lambda st: st.update(column_ranges=[]))
    assert run("verify", d / "bundle-a2", *v) == 1 and "no verified column range proof" in capsys.readouterr().out
    assert run("commit", "--params", d / "pers", "--fisher", d / "fisher.npz", "--client-id", "x", "--out",
               d / "com-x.npz", "--secrets", d / "sec-x.npz", "--column-range", "sometimes") == 2
    assert not (d / "com-x.npz").exists()


def test_malformed_fisher_is_clear(files, capsys):
    d = files
    (d / "broken.npz").write_bytes(b"PK\x03\x04 nope")
    assert run("commit", "--params", d / "pers", "--fisher", d / "broken.npz", "--client-id", "a",
               "--out", d / "c2.npz", "--secrets", d / "s2.npz") == 2
    assert "broken.npz" in capsys.readouterr().err
    assert not (d / "c2.npz").exists() and not (d / "s2.npz").exists()


def test_keys_and_verify_malformed_inputs(files, capsys):
    d = files
    assert run("keys", "--block-size", 4, "--logrows", 11, "--kmax", 2, "--keystore", d / "provider") == 0
    out = capsys.readouterr().out
    assert "INSECURE" in out and json.loads(out[: out.rindex("}") + 1])["logrows"] == 11
    assert run("verify", d / "no-bundle", "--commitment", d / "nope.json", "--mask", d / "mask.json") == 2
    assert "nope.json" in capsys.readouterr().err
    (d / "junk.json").write_text("{]")
    assert run("verify", d / "no-bundle", "--commitment", d / "junk.json", "--mask", d / "mask.json", "--json") == 2
    assert json.loads(capsys.readouterr().out)["malformed"] is True
    # the forget audit's options: a policy needs the forget set, the forget set the deployed model
    v = ["verify", d / "no-bundle", "--commitment", d / "nope.json", "--mask", d / "mask.json"]
    assert run(*v, "--max-forget-accuracy", 0.2) == 2
    assert "needs --forget" in capsys.readouterr().err
    assert run(*v, "--forget", d) == 2
    assert "give --deployed and --opening" in capsys.readouterr().err
    assert run(*v, "--forget", d, "--max-forget-accuracy", 1.5) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_parser_help_and_every_option_has_a_help_line(capsys):
    assert cli.main(["--help"]) == 0
    assert cli.main(["verify"]) == 2  # missing arguments: usage error, exit 2, no traceback
    assert "Traceback" not in capsys.readouterr().err
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "cmd")
    for name, p in sub.choices.items():
        for a in p._actions:
            if a.dest != "help":
                assert a.help, f"zkapex {name} {a.option_strings or a.dest} has no help line"


@pytest.mark.slow
def test_demo_quick(tmp_path):
    """The whole protocol, tiny training, one fc1 kernel of vit-test (minutes)."""
    rc = run("demo", "--out", tmp_path / "demo", "--quick", "--block-size", 16,
             "--pattern", "*/layer/0/intermediate/dense/kernel", "--jobs", 2, "--cache", tmp_path / "cache")
    s = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert rc == 0 and s["valid"] and s["proofs"] >= 1 and s["masked_blocks"] >= 1
    assert s["environment"]["versions"]["ezkl"] and isinstance(s["environment"]["cpu"]["isa"], list)
    assert 1.0 < s["bound_units"] <= 1.25 and s["max_dev_certified_vs_float"] <= 4 * s["theta_unit"]
    # the forget audit ran on the deployed model; --quick reports it without enforcing the policy
    pol, audit = s["forget_policy"], s["forget_audit"]
    assert not pol["enforced"] and 0.0 <= pol["max_forget_accuracy"] <= 1.0 and audit["max_accuracy"] is None
    assert abs(audit["accuracy"] - s["accuracy"]["certified"]["forget_acc"]) < 1e-3 and s["certificate_valid"]


@pytest.mark.slow
def test_demo_default_shows_unlearning(tmp_path):
    """The main job at its defaults (~2.5 min): VALID, the audit enforced and passed, and the
    demo's promise (docs/RESULTS.md, "The demo's request across machines", 9 of 9 variants): the
    certified model goes at least halfway to the retrained model's forget accuracy, and where the
    mask costs the client ≥ 0.02 personal accuracy the certified update recovers ≥ 0.8 of it."""
    rc = run("demo", "--out", tmp_path / "demo", "--jobs", 2, "--executor", "process", "--cache", tmp_path / "cache")
    s = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert rc == 0 and s["valid"] and s["certificate_valid"] and s["forget_policy"]["enforced"]
    assert s["request"]["mask_fraction"] == 0.04 and s["forget_audit"]["passed"]
    a = s["accuracy"]
    p, m, c, r = (a[k] for k in ("personalized", "mask_only", "certified", "retrain"))
    gap = p["forget_acc"] - r["forget_acc"]
    assert gap >= 0.02 and (p["forget_acc"] - c["forget_acc"]) / gap >= 0.5
    cost = p["personal_acc"] - m["personal_acc"]
    if cost >= 0.02:
        assert (c["personal_acc"] - m["personal_acc"]) / cost >= 0.8


@pytest.mark.parametrize("argv", [["keys", "--block-size", "0"], ["keys", "--block-size", "16", "--logrows", "3"],
                                  ["keys", "--block-size", "16", "--logrows", "13", "--kmax", "99"],
                                  ["keys", "--block-size", " 7"], ["keys", "--block-size", "+4"],
                                  ["keys", "--block-size", "\u0663"], ["keys", "--block-size", "1_6"]])
def test_bad_numbers_exit_2_without_traceback(argv, capsys, tmp_path):
    assert run(*argv, "--keystore", tmp_path / "ks", "--cache", tmp_path / "c") == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_demo_story_reads_the_table():
    def row(p, f):
        return {"personal_acc": p, "forget_acc": f}

    forgot = demo_story({"global": row(0.3, 0.9), "personalized": row(0.45, 0.85), "mask_only": row(0.40, 0.50),
                         "certified": row(0.45, 0.80)})
    assert "the mask forgets" in forgot[0] and "keeps 14%" in forgot[1] and "recovers 100%" in forgot[2]
    undone = demo_story({"global": row(0.3, 0.9), "personalized": row(0.45, 0.85), "mask_only": row(0.40, 0.50),
                         "certified": row(0.45, 0.90)})
    assert "undoes the forgetting" in undone[1]
    lost = demo_story({"global": row(0.3, 0.9), "personalized": row(0.45, 0.33), "mask_only": row(0.45, 0.34),
                       "certified": row(0.45, 0.33)})
    assert "already fails the forget classes" in lost[0] and "did not forget" in lost[1]
    assert "nothing to recover" in lost[-1]
    toward = demo_story({"global": row(0.3, 0.9), "personalized": row(0.45, 0.80), "mask_only": row(0.40, 0.0),
                         "certified": row(0.45, 0.20), "retrain": row(0.46, 0.0)})
    assert "the mask forgets" in toward[0] and "75% of the way" in toward[1] and "keeps 75%" in toward[2]


def test_ray_address_where_nothing_listens_is_a_clear_error(files, capsys):
    """Issue 18: ray.init of an address where nothing listens retried for ever; now exit 2 at once."""
    import socket

    with socket.socket() as sk:  # a loopback port that was free a moment ago
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    d = files
    rc = run("prove", "--params", d / "pers", "--fisher", d / "fisher.npz", "--commitment", d / "nothing.npz",
             "--secrets", d / "nothing-sec.npz", "--mask", d / "mask.json", "--request-id", "r", "--out", d / "b-ray",
             "--ray-address", f"127.0.0.1:{port}")
    err = capsys.readouterr().err
    assert rc == 2 and "no Ray cluster answers" in err and "Traceback" not in err and not (d / "b-ray").exists()
