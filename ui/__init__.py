"""paraplan's Streamlit app (`paraplan ui`; entry point `ui/app.py`, pages in `ui/views/`).

Pure modules (no Streamlit): `problem` (widget values -> validated specs), `services` (calls into the
planner/costmodel/executor public APIs), `charts` and `topology_view` (Altair), `jobs` and `runs`
(background `paraplan` runs). Streamlit modules: `inputs` (the shared sidebar), `state` (session and
st.cache_data), `widgets`, `calibration`, and `screenshot` (the browser driver for tests and docs)."""
