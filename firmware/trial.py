# The first boot of a new firmware that reached the broker keeps it (boot.py stops counting trial boots). Only
# loaded on such a boot.
from store import read_json, remove, write_json


def confirm():
    """Mark the running image as good in ota.json and drop the backup of the previous one."""
    st = read_json("ota.json")
    if not st or st.get("state") != "trial":
        return False
    write_json("ota.json", {"state": "ok", "version": st.get("version"), "serial": st.get("serial", 0),
                            "bad": st.get("bad", [])})  # fmt: skip
    for name in st.get("backup", ()):
        remove("ota_old/" + name)
    return True
