"""Novation: lawful, encrypted migration of a customer book from a seller to an acquirer."""

import setuptools

REQUIRED = [
    'apache-beam==2.77.0',
    'pyarrow>=17,<26',
    'tink==1.16.1',
    'google-crc32c>=1.5',
    'PyYAML>=6',
    'numpy>=1.24',
    'Faker>=30',
    'fastavro>=1.9',
    'jsonschema>=4.18',  # the manifest's published shape, checked by every reader
    'python-stdnum>=1.19',  # check digits of resident IDs, USCCs and cards
    'Jinja2>=3.1',  # the report's HTML, autoescaped (transforms/commit/templates)
    'fonttools>=4.40',  # the report carries its CJK glyphs (transforms/commit/report_font.py)
]
# Dataflow (build: the sdist staged for workers) and Cloud KMS master keys (gcp-kms://).
GCP = ['apache-beam[gcp]==2.77.0', 'tink[gcpkms]==1.16.1', 'build>=1']

setuptools.setup(
    name='novation',
    version='0.1.0',
    description='Lawful, encrypted migration of a customer book from a seller to an acquirer '
                '(Apache Beam).',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=setuptools.find_packages(include=['pipelines*', 'transforms*', 'schemas', 'config']),
    package_data={'schemas': ['*.avsc'], 'config': ['*.yaml'],
                  'transforms.commit': ['fonts/*', 'templates/*']},
    install_requires=REQUIRED,
    extras_require={
        'gcp': GCP,
        # The tests build the Dataflow job graph, so they need the gcp extra too; they open
        # the report in Debian's chromium (apt-get) through Playwright, and read its screenshot;
        # they check the re-identification figures against pycanon (on pandas), and Tink's
        # deterministic AEAD against the cryptography package's AES-SIV.
        'test': ['pytest>=8', 'hypothesis>=6.100', 'playwright>=1.40', 'pillow>=10',
                 'pycanon>=1.3', 'pandas>=2', 'cryptography>=41', 'ruff>=0.5'] + GCP,
    },
    entry_points={'console_scripts': ['novation = pipelines.cli:main']},
)
