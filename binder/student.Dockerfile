# The student image for a class (a JupyterHub's single-user servers), built by
#   python -m autograder hosted-image build --student
# on binder/Dockerfile's `lab` stage (the cluster binaries and the server's settings), from a build
# context that holds only what STUDENT_FILES in autograder/build/hostedimage.py allows: the release
# (home/notebooks) and the lab runtime with its self-checks (lib/autograder), read-only for the
# student. No masters, hidden tests, reference manifests or app, grading or build tooling.
ARG LAB_IMAGE=k8s-ml-lab-lab:latest
FROM ${LAB_IMAGE}
ARG NB_USER=jovyan
ARG NB_UID=1000
COPY lib/ /opt/k8s-ml-lab/lib/
COPY --chown=${NB_UID}:${NB_UID} home/ ${HOME}/
# Students get nbgrader's Assignments tab and validation; not the instructor's formgrader, Create
# Assignment or course list (--system: the Python's own prefix is not where pip put nbgrader).
RUN site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && echo /opt/k8s-ml-lab/lib > "${site}/k8s-ml-lab.pth" \
    && for plugin in formgrader create-assignment course-list; do \
           jupyter labextension disable --level=system "@jupyter/nbgrader:${plugin}"; done \
    && for extension in formgrader course_list; do \
           jupyter server extension disable --system "nbgrader.server_extensions.$extension"; \
       done \
    && python -c "import autograder.lab, autograder.lesson.checks, autograder.practice.supervise"
WORKDIR ${HOME}
USER ${NB_USER}
