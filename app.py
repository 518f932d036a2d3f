"""Entry point of the LM4LV demo (locally and as a Hugging Face Space): `python app.py --help`."""

from app.main import main

if __name__ == "__main__":
    main()
