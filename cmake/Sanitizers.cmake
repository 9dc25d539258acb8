# LLMC_SANITIZE=address,undefined (or thread) builds everything with those sanitizers.
if(LLMC_SANITIZE)
  message(STATUS "llmc: sanitizers ${LLMC_SANITIZE}")
  add_compile_options(-fsanitize=${LLMC_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${LLMC_SANITIZE})
endif()
