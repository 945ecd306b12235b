"""The builder: runtime templates -> build contexts -> images (docker SDK); Knative manifests.

Import the submodules directly (``templates``, ``context``, ``images``); this package imports
nothing eagerly so that ``hydro templates`` never pays for the docker SDK.
"""
