"""Drives a real Prefect 3 server for the bridge's end-to-end test.

Usage (PREFECT_API_URL must point at the server):
  prefect_e2e.py setup <intake-url>   create a Webhook block and an automation posting
                                      the README's recommended payload to the bridge
  prefect_e2e.py broken <intake-url> <unknown-intake-url>
                                      automations calling the bridge, each wrong in one way
  prefect_e2e.py fanout <bridge-url> <n>
                                      n automations, each calling its own action fan<i> on Failed
  prefect_e2e.py empty <intake-url>   a Webhook block and an automation on flow-run Failed and
                                      Completed with Prefect's default, empty payload
  prefect_e2e.py fail <marker-file>   run a flow that fails (the marker file does not exist yet)
  prefect_e2e.py retry <run-id> <marker-file>
                                      what Prefect's Retry button does: set the run to
                                      AwaitingRetry, then execute the same run again; it succeeds
Prints one JSON object on the last line of stdout.
"""
import json
import os
import sys
import time


RECOMMENDED_PAYLOAD = "{{ event | tojson }}"


def create_automation(body):
    """POSTs an automation through Prefect's own client, which retries a busy
    server's 503 and carries the CSRF token a protected server asks for."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        r = client._client.post("/automations/", json=body)
        r.raise_for_status()
        return r.json()


def setup(intake_url):
    from prefect.blocks.webhook import Webhook

    block_id = Webhook(method="POST", url=intake_url, headers={}).save("ppb-e2e", overwrite=True)
    body = {
        "name": "ppb-e2e: page on flow run failure, resolve on completion",
        "enabled": True,
        "trigger": {
            "type": "event",
            "posture": "Reactive",
            "expect": [
                "prefect.flow-run.Failed",
                "prefect.flow-run.Crashed",
                "prefect.flow-run.TimedOut",
                "prefect.flow-run.Late",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Running",
            ],
            "match": {"prefect.resource.id": "prefect.flow-run.*"},
            "for_each": ["prefect.resource.id"],
            "threshold": 1,
            "within": 0,
        },
        "actions": [
            {"type": "call-webhook", "block_document_id": str(block_id), "payload": RECOMMENDED_PAYLOAD}
        ],
    }
    created = create_automation(body)
    # Prefect loads automations into its trigger engine shortly after creation.
    time.sleep(3)
    return {"automation_id": created["id"], "block_id": str(block_id)}


def broken(intake_url, unknown_url):
    """Automations that call the bridge, each wrong in one way `prefect check` must find."""
    from prefect.blocks.webhook import Webhook

    good = str(Webhook(method="POST", url=intake_url, headers={}).save("ppb-broken", overwrite=True))
    unknown = str(Webhook(method="POST", url=unknown_url, headers={}).save("ppb-unknown", overwrite=True))
    made = []

    def automation(name, expect, block, payload=RECOMMENDED_PAYLOAD, enabled=True):
        body = {
            "name": name,
            "enabled": enabled,
            "trigger": {
                "type": "event",
                "posture": "Reactive",
                "expect": expect,
                "match": {"prefect.resource.id": "prefect.flow-run.*"},
                "for_each": ["prefect.resource.id"],
                "threshold": 1,
                "within": 0,
            },
            "actions": [{"type": "call-webhook", "block_document_id": block, "payload": payload}],
        }
        made.append(create_automation(body)["id"])

    both = ["prefect.flow-run.Failed", "prefect.flow-run.Completed"]
    automation("ppb-broken: empty payload", both, good, payload="")
    automation("ppb-broken: no recovery", ["prefect.flow-run.Failed"], good)
    automation("ppb-broken: disabled", both, good, enabled=False)
    automation("ppb-broken: unknown action", both, unknown)
    for i in range(5):
        automation(f"ppb-broken: fan-out {i}", ["prefect.flow-run.Crashed", "prefect.flow-run.Completed"], good)
    return {"automations": made}


def fanout(bridge_url, count, refused_url=None, refused=0):
    """`count` automations, each calling its own action `fan<i>` of the bridge on a failed run,
    then `refused` more whose blocks post to `refused_url`, where nothing listens."""
    from prefect.blocks.webhook import Webhook

    made = []
    count, refused = int(count), int(refused)
    for i in range(count + refused):
        base = bridge_url if i < count else refused_url
        block = Webhook(method="POST", url=f"{base}/v1/prefect/fan{i}", headers={})
        block_id = str(block.save(f"ppb-fan{i}", overwrite=True))
        body = {
            "name": f"ppb-fan{i}",
            "enabled": True,
            "trigger": {
                "type": "event",
                "posture": "Reactive",
                "expect": ["prefect.flow-run.Failed"],
                "match": {"prefect.resource.id": "prefect.flow-run.*"},
                "for_each": ["prefect.resource.id"],
                "threshold": 1,
                "within": 0,
            },
            "actions": [{"type": "call-webhook", "block_document_id": block_id, "payload": RECOMMENDED_PAYLOAD}],
        }
        made.append(create_automation(body)["id"])
    time.sleep(3)
    return {"automations": made}


def empty(intake_url):
    from prefect.blocks.webhook import Webhook

    block_id = Webhook(method="POST", url=intake_url, headers={}).save("ppb-empty", overwrite=True)
    body = {
        "name": "ppb-empty-payload",
        "enabled": True,
        "trigger": {
            "type": "event",
            "posture": "Reactive",
            "expect": ["prefect.flow-run.Failed", "prefect.flow-run.Completed"],
            "match": {"prefect.resource.id": "prefect.flow-run.*"},
            "for_each": ["prefect.resource.id"],
            "threshold": 1,
            "within": 0,
        },
        # No "payload": Prefect's default, an empty body.
        "actions": [{"type": "call-webhook", "block_document_id": str(block_id)}],
    }
    created = create_automation(body)
    time.sleep(3)
    return {"automation": created["id"]}


def make_flow(marker):
    from prefect import flow

    @flow(name="ppb-e2e-flow", retries=0)
    def ppb_e2e_flow():
        if not os.path.exists(marker):
            raise ValueError("ppb e2e: first attempt fails")
        return "ok"

    return ppb_e2e_flow


def fail(marker):
    flow = make_flow(marker)
    state = flow(return_state=True)
    assert state.is_failed(), state
    return {"flow_run_id": str(state.state_details.flow_run_id), "state": state.name}


def retry(run_id, marker):
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow
    from prefect.states import AwaitingRetry

    open(marker, "w").close()
    with get_client(sync_client=True) as client:
        # The Retry button forces the run back to AwaitingRetry; a worker then
        # executes the same flow run again.
        client.set_flow_run_state(run_id, state=AwaitingRetry(), force=True)
        flow_run = client.read_flow_run(run_id)
    state = run_flow(make_flow(marker), flow_run=flow_run, return_type="state")
    assert state.is_completed(), state
    return {"flow_run_id": run_id, "state": state.name}


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    out = {"setup": setup, "broken": broken, "empty": empty, "fanout": fanout, "fail": fail, "retry": retry}[cmd](
        *args
    )
    print(json.dumps(out))
