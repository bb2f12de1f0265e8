"""Lesson 01's facts, figures, matrix and decision framework as data the notebooks compute with."""
