# Entry point on the board: load config.json, run one phase of a wake, then restart, deep-sleep or reset.
# A wake runs in phases, one per (soft) restart, so each starts on a fresh heap: node (MQTT: status, task, ack),
# trainer (the MLP, radio idle), ota (a firmware download). The store passes the hand-over between them.
# Everything is caught here: whatever fails, the board sleeps and a fresh boot tries again.
import gc
import sys

import board


def load_config():
    # config.py is needed only here: no name outlives this call, so its code is freed before the phase runs
    import config

    try:
        return config.load()
    finally:
        sys.modules.pop("config", None)


def wake():
    try:
        cfg = load_config()
    except Exception as exc:  # noqa: BLE001 - without a valid config a board can only wait to be provisioned
        print("iotfl: config:", exc)
        return "sleep", 600000
    gc.collect()
    board.debug = cfg["debug"]
    from store import Store, read_json

    st = Store()
    phase = st.get("phase")
    st.set(boots=st.get("boots") + 1, phase=None)  # a phase that crashes is not run again
    image = read_json("ota.json") or {}  # the firmware image's state, kept by boot.py
    fw = image.get("version") or cfg["fw"]
    trial = image.get("state") == "trial"  # node.py confirms the image once it reaches the broker
    image = None
    try:
        if phase == "train":
            import trainer

            trainer.run(cfg, st)
            return "restart", 0
        if cfg["wifi"]:
            w = cfg["wifi"]
            board.wifi_connect(w["ssid"], w["password"], w["timeout_ms"], w["retries"])
            board.sync_time()
        if phase == "ota":
            import ota

            return ("reset" if ota.run(cfg, st, fw) else "restart"), 0
        gc.collect()
        # the receive buffer for tasks, allocated before the network code fragments the heap
        rx = bytearray(st.get("rx")) if st.get("rx") else None
        import node

        action, ms = node.run(cfg, st, fw, rx, trial)
        if action in ("train", "ota"):
            st.set(phase=action)
        return action, ms
    except Exception as exc:  # noqa: BLE001 - any failure: sleep, then a fresh boot tries again
        print("iotfl: wake failed:", repr(exc))
        sys.print_exception(exc)
    return "sleep", cfg["sleep"]["retry_ms"]


def main():
    action, ms = wake()
    board.mem("end")
    if action in ("train", "ota", "rx", "restart"):
        board.restart()  # the next phase, on a fresh heap
    elif action == "reset":
        board.reset()
    else:
        board.deepsleep(ms)


main()
