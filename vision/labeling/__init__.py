"""Labeling: frames the devices kept go to Label Studio, where people annotate them.

loopline talks to Label Studio over HTTP only (label-studio-sdk, the `label` extra). The
server is either an existing one (LOOPLINE_LABEL_STUDIO_URL) or the local one that
`loopline labelstudio up` runs from its own venv (`local_server`).
"""
