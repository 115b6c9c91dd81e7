"""The deployment version as a run option: ``--deploy-version``, ``OPENRTC_DEPLOY_VERSION``,
``pool.run(deploy_version=...)`` (see :mod:`openrtc_core.deployment`).

The core declares it as any plugin declares its options, so it shows in each run verb's
help and in the command reference beside theirs.
"""

from __future__ import annotations

from ..deployment import (
    OLD_VERSION_ENV,
    OLD_VERSION_FLAG,
    VERSION_ENV,
    VERSION_FLAG,
    VERSION_OPTION,
    checked_version,
)
from ..hookspecs import AddRunOption, hookimpl
from ..runoptions import RunOption


@hookimpl
def openrtc_add_run_options(add: AddRunOption) -> None:
    add(
        RunOption(
            name=VERSION_OPTION,
            flag=VERSION_FLAG,
            help=(
                "The deployment version this worker reports (participant attribute "
                "openrtc.deploy, SessionInfo.deploy, logs). Default: the git commit of "
                "TARGET's folder (-dirty with local changes), else a hash of its Python files."
            ),
            parse=checked_version,
            env=VERSION_ENV,
            metavar="VERSION",
            old_flags=(OLD_VERSION_FLAG,),
            old_env=(OLD_VERSION_ENV,),
            old_names=("version",),
        )
    )
