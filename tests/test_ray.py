"""Proving on Ray: a local instance with 2 workers proves the plan, a killed worker's proof is
retried, and the bundle verifies."""

import os

import numpy as np
import pytest

from zkapex_jax import protocol as P
from zkapex_jax.protocol import prover
from zkapex_jax.protocol.statement import statement_core

from conftest import empirical_fisher

ray = pytest.importorskip("ray")
NB, B = 3, 4


@pytest.fixture(scope="module")
def world(tmp_path_factory, zk_shared):
    root = tmp_path_factory.mktemp("ray")
    rng = np.random.default_rng(3)
    fisher = empirical_fisher(rng, NB, B, 3 * B, 1e-2)
    theta_p = rng.normal(size=(NB, B)) * 0.05
    mask = np.zeros((NB, B), dtype=bool)
    mask[0, 1] = mask[2, [0, 3]] = True
    ks = P.KeyStore()
    com, sec = P.commit_personalization(theta_p, fisher, P.CommitSpec(block_size=B, logrows=11),
                                        client_id="c", keystore=ks)
    com = P.save_commitment(root / "com.npz", com, sec, root / "sec.npz")
    yield dict(root=root, theta_p=theta_p, fisher=fisher, mask=mask, com=com, sec=sec, ks=ks,
               provider=P.KeyStore(zk_shared["provider"]))


@pytest.mark.slow  # a Ray start-up (~30–45 s on 2 busy cores); CI runs it
def test_prove_on_local_ray_and_verify(world):
    out = P.prove_unlearning(world["theta_p"], world["fisher"], world["mask"], world["com"], world["sec"],
                             request_id="r", out_dir=world["root"] / "bundle", keystore=world["ks"], jobs=2,
                             executor="ray")
    res = P.verify_bundle(out, world["com"], world["mask"], keystore=world["provider"])
    assert res.valid and res.n_proofs == 2, res.reason
    assert P.load_statement(out)["prover"]["executor"] == "ray"


@pytest.mark.slow  # a second Ray start-up (~1 min on 2 cores); CI runs it
def test_killed_worker_is_retried(world, tmp_path):
    u = P.unlearn_committed(world["theta_p"], world["fisher"], world["mask"], world["com"], world["sec"],
                            keystore=world["ks"])
    core = statement_core(client_id="c", request_id="r", mask_digest=P.mask_digest(world["mask"]),
                          commitment_sha256=world["com"].sha256, spec=world["com"].spec.to_dict(),
                          theta_exp=world["com"].theta_exp, n_chunks=len(u.plan))
    tasks = prover.build_tasks(u, world["com"], world["sec"], core, world["ks"])
    marker = str(tmp_path / "killed-once")

    def flaky(task):  # the first attempt of proof 0 kills its worker process
        if task[0] == 0 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return prover._prove_task(task)

    results = prover._run_ray(tasks, 2, False, None, task_fn=flaky)
    assert os.path.exists(marker) and [r[0] for r in results] == [0, 1]
    assert all(len(r[1]) > 1000 for r in results)
