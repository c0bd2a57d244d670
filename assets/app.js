/* dashboard script: being written */
