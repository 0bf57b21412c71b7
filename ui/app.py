"""paraplan's Streamlit app (`paraplan ui`, or `streamlit run ui/app.py`).

Every planning page draws the same sidebar (model, cluster, training, constraints; `ui.inputs`, values
kept across pages) and calls the packages' public APIs. Every input is in the URL (`ui.urlstate`)."""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="paraplan", page_icon=":material/hub:", layout="wide")

from ui import inputs, urlstate  # noqa: E402  (after set_page_config; registers every input's URL name)

urlstate.apply_url(ranges=inputs.URL_RANGES)  # whichever page a link opens: its values go into the inputs

PAGES = [
    st.Page("views/plan.py", title="Plan", icon=":material/search:", default=True),
    st.Page("views/detail.py", title="Plan detail", icon=":material/insights:"),
    st.Page("views/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("views/whatif.py", title="What-if", icon=":material/tune:"),
    st.Page("views/run.py", title="Run", icon=":material/play_arrow:"),
    st.Page("views/calibrate.py", title="Calibrate", icon=":material/straighten:"),
]

st.navigation(PAGES).run()
