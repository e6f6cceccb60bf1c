"""The node provider of the rehearsal's autoscaling head (vidtempo.tooling.servers.AutoscalingHead),
imported by Ray's autoscaler monitor on that head — its own module, so that importing the
rehearsal does not import Ray (a process's Ray reads RAY_AUTH_MODE once, when it is imported).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ray._private.node import Node
from ray._private.parameter import RayParams
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider
from ray.autoscaler.tags import (
    NODE_KIND_WORKER,
    STATUS_UP_TO_DATE,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_NAME,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)


class LocalNodeProvider(FakeMultiNodeProvider):
    """Ray's fake multi-node provider — the autoscaler launches each node as a raylet on this
    machine — with two changes that make its nodes behave as a cloud's do:

    - a node is up to date once it runs. Ray's class keeps the launcher's "uninitialized"
      status (its set_node_tags refuses every change), and the autoscaler never gives up a node
      in that status when its raylet dies: a lost node held its place under max_workers for
      good (measured);
    - a node has a temp dir of its own (under provider.node_temp_root), as on its own machine.
      Ray's class gives every node the head's: a starting node's runtime-env agent then emptied
      the job working-dir copies the head's job drivers ran in (measured: the driver's cwd
      vanished, `[Errno 2] No such file or directory`)."""

    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        resources = dict(resources)
        with self.lock:
            node_id = self._next_hex_node_id()
            kind = tags[TAG_RAY_USER_NODE_TYPE]
            temp = Path(self.provider_config["node_temp_root"]) / f"node-{node_id[-5:]}"
            cpus, gpus = resources.pop("CPU", 0), resources.pop("GPU", 0)
            store = resources.pop("object_store_memory", None)
            params = RayParams(
                gcs_address=self._gcs_address, redis_address=self._gcs_address,
                temp_dir=str(temp), min_worker_port=0, max_worker_port=0, dashboard_port=None,
                dashboard_agent_listen_port=0, num_cpus=cpus, num_gpus=gpus,
                object_store_memory=store, resources=resources, labels=labels,
                # the node's id is the provider's (the autoscaler maps one to the other); its
                # type is in the raylet's environment (the rehearsal finds nodes by it)
                env_vars={"RAY_OVERRIDE_NODE_ID_FOR_TESTING": node_id,
                          "RAY_CLOUD_INSTANCE_ID": node_id, "RAY_NODE_TYPE_NAME": kind},
            )  # fmt: skip
            node = Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False)
            self._nodes[node_id] = {
                "tags": {**tags, TAG_RAY_NODE_KIND: NODE_KIND_WORKER, TAG_RAY_NODE_NAME: node_id,
                         TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE},
                "node": node, "temp": temp,
            }  # fmt: skip

    def _terminate_node(self, node):
        super()._terminate_node(node)
        shutil.rmtree(node["temp"], ignore_errors=True)
