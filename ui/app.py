"""paraplan's Streamlit app (`paraplan ui`, or `streamlit run ui/app.py`).

Every planning page draws the same sidebar (model, cluster, training, constraints; `ui.inputs`, values
kept across pages) and calls the packages' public APIs."""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="paraplan", page_icon=":material/hub:", layout="wide")

PAGES = [
    st.Page("pages/plan.py", title="Plan", icon=":material/search:", default=True),
    st.Page("pages/detail.py", title="Plan detail", icon=":material/insights:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("pages/whatif.py", title="What-if", icon=":material/tune:"),
    st.Page("pages/run.py", title="Run", icon=":material/play_arrow:"),
    st.Page("pages/calibrate.py", title="Calibrate", icon=":material/straighten:"),
]

st.navigation(PAGES).run()
