# café
print('latin-1 bytes')
